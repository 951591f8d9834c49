"""Shared helpers: the database layer and the code version."""
