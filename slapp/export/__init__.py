"""Exports of stored segmentation runs to community formats (NWB)."""
