"""Celery tasks: thin, ids only, one service call each."""

from __future__ import annotations

from celery import shared_task

from cdss.jobs import runner


@shared_task(name="cdss.run_job", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job_task(job_id: int) -> str:
    return runner.run_in_worker(job_id)


@shared_task(name="cdss.reap_expired_jobs", ignore_result=True, time_limit=120, soft_time_limit=100)
def reap_expired_jobs_task() -> int:
    return runner.jobs_reap_expired()


@shared_task(name="cdss.publish_pending_jobs", ignore_result=True, time_limit=120, soft_time_limit=100)
def publish_pending_jobs_task() -> int:
    return runner.jobs_publish_pending()
