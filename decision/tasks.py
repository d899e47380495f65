"""Celery tasks of decision support: thin, ids only."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="decision.sweep", ignore_result=True, time_limit=300, soft_time_limit=270)
def sweep_decisions_task() -> int:
    """Queue evaluations for patients with new results or a stale evaluation; fail the backtests
    whose jobs gave up."""
    from .services import backtests_fail_abandoned, decision_sweep

    backtests_fail_abandoned()
    return decision_sweep()
