"""Scoring segmentations against ground truth."""
