"""Labels back into the pipeline: consensus, agreement, classifiers, predictions, Ground Truth."""
