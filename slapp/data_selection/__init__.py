"""Step 1 and 2 of the flow: select experiments, build the segmentation manifest."""
