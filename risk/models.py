"""Models of the risk app (built in its own issue)."""
