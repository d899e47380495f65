"""The job platform: one mechanism for every queued analysis (see runner.py)."""
