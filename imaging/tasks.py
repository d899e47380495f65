"""Celery tasks of imaging outside the job platform: thin, no arguments."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="imaging.held_sweep", ignore_result=True, time_limit=300, soft_time_limit=270)
def held_sweep_task() -> int:
    """File the held images whose patient the record now has; discard those held too long."""
    from .held import held_sweep

    filing = held_sweep()
    return filing.filed
