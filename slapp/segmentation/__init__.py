"""Step 3 of the flow: Suite2P segmentation of manifest entries."""
