"""The labeling database schema and the command that creates it."""
