"""Steps 4-6: labeling jobs, the artifacts a labeler looks at, the labels they give, and
the labels back into the pipeline: consensus, classifiers, predictions, Ground Truth files."""
