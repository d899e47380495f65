"""Celery tasks of imaging outside the job platform: thin, no arguments."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="imaging.sweep", ignore_result=True, time_limit=300, soft_time_limit=270)
def imaging_sweep_task() -> int:
    """The schedule's sweep: file the held images whose patient the record now has, discard those
    held too long (``imaging.held``), and queue the analysis of images a receiver stored but did not
    live to queue (``imaging.services.analysis_backlog_queue``). The number of images filed."""
    from .held import held_sweep
    from .services import analysis_backlog_queue

    filing = held_sweep()
    analysis_backlog_queue()
    return filing.filed
