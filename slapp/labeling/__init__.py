"""Steps 4-6: labeling jobs, the artifacts a labeler looks at, and the labels they give."""
