"""Step 4: labeling jobs and the artifacts a labeler looks at."""
