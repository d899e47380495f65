"""Models of the imaging app (built in its own issue)."""
