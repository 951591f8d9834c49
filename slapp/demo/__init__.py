"""Synthetic two-photon data for demos and tests."""
