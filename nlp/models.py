"""Models of the nlp app (built in its own issue)."""
