"""Creating, publishing, claiming, running and recovering jobs.

The same functions run in a Celery worker and, on the embedded default (no broker), in the web
process right after the creating transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdss.models import Job

from .registry import JobKind, get_kind
from .triggers import job_succeeded

log = logging.getLogger("cdss.jobs")

S = Job.Status


def lease_seconds() -> int:
    return int(settings.CDSS_JOB_LEASE_SECONDS)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def input_hash(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --------------------------------------------------------------------------------------------
# Creating and publishing


def job_enqueue(
    *,
    kind: str,
    patient: Any = None,
    target: Any = None,
    params: dict[str, Any] | None = None,
    inputs: Any = None,
    user: Any = None,
    key: str | None = None,
) -> Job:
    """Create the job in the caller's transaction; publish it after commit.

    The idempotency key is kind + target + hash of the inputs + the kind's version, unique in the
    database: asking twice for the same work returns the existing job. ``params`` travel in the
    job row, never in the broker message; they must not hold patient data beyond ids.
    """
    spec = get_kind(kind)
    params = params or {}
    target_type = f"{target._meta.app_label}.{target._meta.model_name}" if target is not None else ""
    target_id = str(target.pk) if target is not None else ""
    digest = input_hash({"params": params, "inputs": inputs})
    if key is None:
        scope = f"{target_type}:{target_id}" if target is not None else f"patient:{getattr(patient, 'pk', '')}"
        key = f"{kind}|{scope}|{digest}|v{spec.version}"
    now = timezone.now()
    job = Job(
        kind=kind, queue=spec.queue, patient=patient, target_type=target_type, target_id=target_id, params=params,
        input_hash=digest, version=spec.version, idempotency_key=key,
        max_attempts=spec.max_attempts or int(settings.CDSS_JOB_MAX_ATTEMPTS), available_at=now,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    # INSERT ... ON CONFLICT DO NOTHING on the unique key: concurrent callers get one job.
    Job.objects.bulk_create([job], ignore_conflicts=True)
    job = Job.objects.get(idempotency_key=key)
    if job.status == S.QUEUED and job.published_at is None:
        _publish_after_commit(job.pk)
    return job


def _publish_after_commit(job_id: int) -> None:
    """Publish the jobs a transaction created together, once, after it commits: one SELECT, one
    UPDATE and one broker connection for the whole batch."""
    conn = transaction.get_connection()
    batch: list[int] | None = getattr(conn, "_cdss_publish_batch", None)
    callback = getattr(conn, "_cdss_publish_callback", None)
    # The batch is still open if its callback is still registered on this transaction (a
    # rollback discards both).
    if batch is None or not any(entry[1] is callback for entry in conn.run_on_commit):
        batch = []

        def flush() -> None:
            conn._cdss_publish_batch = None  # type: ignore[attr-defined]
            jobs_publish(batch)

        conn._cdss_publish_batch = batch  # type: ignore[attr-defined]
        conn._cdss_publish_callback = flush  # type: ignore[attr-defined]
        batch.append(job_id)
        transaction.on_commit(flush)
        return
    batch.append(job_id)


def job_publish(job_id: int) -> bool:
    """Send the doorbell for one job. A broker outage is not an error: the relay retries."""
    return jobs_publish([job_id]) == 1


def jobs_publish(job_ids: list[int]) -> int:
    """Send the doorbells for jobs that are due, on one broker connection; returns how many were
    sent. If the broker fails, the unsent jobs are left for the relay."""
    from cdss.celery import app
    from cdss.tasks import run_job_task

    if not job_ids:
        return 0
    rows = list(Job.objects.filter(pk__in=job_ids, status__in=[S.QUEUED, S.FAILED]).order_by("pk")
                .values_list("pk", "queue", "kind"))
    if not rows:
        return 0
    Job.objects.filter(pk__in=[pk for pk, _, _ in rows], status__in=[S.QUEUED, S.FAILED]).update(
        status=S.QUEUED, published_at=timezone.now()
    )
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for pk, queue, kind in rows:
                limit = get_kind(kind).time_limit or int(settings.CELERY_TASK_TIME_LIMIT)
                run_job_task.apply_async(args=[pk], queue=queue, time_limit=limit,
                                         soft_time_limit=max(1, limit - 30), retry=False, producer=producer)
                sent += 1
    except Exception as exc:  # noqa: BLE001 - any broker failure: keep the jobs for the relay
        unsent = [pk for pk, _, _ in rows[sent:]]
        Job.objects.filter(pk__in=unsent, status=S.QUEUED).update(published_at=None)
        # Broker errors name hosts and channels, never patient data.
        log.warning("%s job(s) not published (%s: %s); the relay will publish them", len(unsent),
                    type(exc).__name__, str(exc)[:200])
    return sent


def jobs_publish_pending(*, limit: int = 1000) -> int:
    """The relay: publish queued jobs that were never published (broker down at the time), jobs
    whose retry back-off is over, and queued jobs whose message was lost (a broker restarted
    without persistence: their queue is empty but they never started)."""
    now = timezone.now()
    stale = now - timedelta(seconds=int(settings.CDSS_JOB_REPUBLISH_SECONDS))
    due = Q(status__in=[S.QUEUED, S.FAILED], available_at__lte=now) & (
        Q(published_at__isnull=True) | Q(status=S.FAILED) | Q(published_at__lt=stale)
    )
    candidates = list(Job.objects.filter(due).order_by("available_at").values_list("pk", "queue", "published_at",
                                                                                   "status")[:limit])
    empty_queues = _empty_queues({q for _, q, p, s in candidates if p is not None and s == S.QUEUED})
    due_ids = [
        pk for pk, queue, published_at, status in candidates
        # a queued job published recently, or whose queue still holds messages, is presumably
        # still waiting in the broker
        if not (status == S.QUEUED and published_at is not None and queue not in empty_queues)
    ]
    return jobs_publish(due_ids)


def _empty_queues(queues: set[str]) -> set[str]:
    if not queues:
        return set()
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return queues
    depths = queue_depths(queues)
    if depths is None:  # broker down: nothing to do until it returns
        return set()
    return {queue for queue, count in depths.items() if count == 0}


QUEUE_DEPTH_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5}


def queue_depths(queues: set[str]) -> dict[str, int] | None:
    """Messages waiting in each broker queue (an undeclared queue holds none), on a connection of
    its own; None when the broker cannot be reached or does not answer within a few seconds (the
    worker's event loop calls this: a broker that accepts and never answers must not hang it)."""
    from cdss.celery import app

    depths = {}
    try:
        with app.connection_for_read(transport_options=QUEUE_DEPTH_TIMEOUTS) as conn:
            channel = conn.default_channel
            for queue in queues:
                try:
                    _, count, _ = channel.queue_declare(queue=queue, passive=True)
                except conn.channel_errors:  # an undeclared queue holds nothing
                    count = 0
                depths[queue] = int(count)
    except Exception:  # noqa: BLE001 - broker down or unreachable
        return None
    return depths


# --------------------------------------------------------------------------------------------
# Claiming and running


@dataclass
class JobContext:
    job: Job
    worker: str

    def progress(self, percent: int, message: str = "") -> None:
        """Report progress (0-100) and renew the lease."""
        percent = max(0, min(100, int(percent)))
        Job.objects.filter(pk=self.job.pk, status=S.RUNNING, worker=self.worker).update(
            progress=percent, progress_message=message[:200],
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds()),
        )

    def renew(self) -> bool:
        return bool(
            Job.objects.filter(pk=self.job.pk, status=S.RUNNING, worker=self.worker).update(
                lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds())
            )
        )


class LeaseLost(RuntimeError):
    """Another worker owns the job now (our lease expired and it was re-queued)."""


_CLAIM_SQL = f"""
    UPDATE {Job._meta.db_table}
       SET status = %s, attempts = attempts + 1, worker = %s, started_at = %s, lease_expires_at = %s,
           progress = 0, progress_message = '', updated_at = %s
     WHERE id = %s AND status = %s AND available_at <= %s
 RETURNING *
"""  # noqa: S608 - the table name is the model's own; every value is a parameter


def job_claim(job_id: int, worker: str) -> Job | None:
    """Take the job if it is queued and due: one conditional UPDATE ... RETURNING, so two workers
    never both win and the winner gets the row without a second query."""
    adapt = connection.ops.adapt_datetimefield_value
    now = timezone.now()
    at, lease = adapt(now), adapt(now + timedelta(seconds=lease_seconds()))
    claimed = list(Job.objects.raw(_CLAIM_SQL, [S.RUNNING, worker, at, lease, at, job_id, S.QUEUED, at]))
    return claimed[0] if claimed else None


class _Heartbeat:
    """Renews the lease from a side thread while the handler runs. The thread's first renewal
    comes after a third of the lease, so a short job costs only the thread's start and stop
    (about 0.2 ms) and no query."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.interval = max(1.0, lease_seconds() / 3)
        self.thread = threading.Thread(target=self.loop, name=f"job-{ctx.job.pk}-lease", daemon=True)

    def loop(self) -> None:
        try:
            while not self.stop.wait(self.interval):
                if not self.ctx.renew():
                    return
        finally:
            connection.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def job_run(job_id: int, *, worker: str | None = None) -> str:
    """Claim and run one job; returns what happened (for logs and tests)."""
    worker = worker or worker_name()
    job = job_claim(job_id, worker)
    if job is None:
        return "not-claimed"
    spec = get_kind(job.kind)
    ctx = JobContext(job=job, worker=worker)
    try:
        # The work itself runs outside any transaction, so progress is visible and the lease is
        # renewed; its results are written with the status change in one transaction.
        with _Heartbeat(ctx):
            payload = spec.handler(job, ctx)
        try:
            with transaction.atomic():
                result = spec.writer(job, payload) if spec.writer else payload
                finished = Job.objects.filter(pk=job.pk, status=S.RUNNING, worker=worker).update(
                    status=S.SUCCEEDED, finished_at=timezone.now(), progress=100, result=result or {}, error="",
                    lease_expires_at=None,
                )
                if not finished:
                    raise LeaseLost(f"job {job.pk} was taken over by another worker")
                job_succeeded(job, result or {})
        except BaseException:
            _discard(job, spec, payload)
            raise
    except LeaseLost:
        log.warning("job %s: lease lost, result discarded", job.pk)
        return "lease-lost"
    except Exception as exc:  # noqa: BLE001 - any failure of a handler is recorded on the job
        _record_failure(job, worker, spec, exc)
        return "failed"
    return "succeeded"


def _discard(job: Job, spec: JobKind, payload: Any) -> None:
    """The payload was not kept (rolled back): its kind removes what its handler left outside the
    database. A failure here is logged; the job's own failure is what is recorded."""
    if spec.discard is None:
        return
    try:
        spec.discard(job, payload)
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        log.error("job %s (%s): discarding its unkept result failed (%s)", job.pk, job.kind, type(exc).__name__)


def _record_failure(job: Job, worker: str, spec: JobKind, exc: BaseException) -> None:
    # The error text names the exception and where it was raised; handlers must not put patient
    # data in exception messages (the admin shows this text to operators).
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        frame = tb[-1]
        text += f"\n  at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    now = timezone.now()
    fresh = Job.objects.filter(pk=job.pk, status=S.RUNNING, worker=worker)
    if job.attempts >= job.max_attempts:
        fresh.update(status=S.DEAD, error=text, finished_at=now, lease_expires_at=None)
        log.error("job %s (%s) is dead after %s attempts", job.pk, job.kind, job.attempts)
    else:
        backoff = int(settings.CDSS_JOB_RETRY_BACKOFF_SECONDS) * (2 ** (job.attempts - 1))
        fresh.update(status=S.FAILED, error=text, available_at=now + timedelta(seconds=backoff),
                     lease_expires_at=None, published_at=None)
        log.warning("job %s (%s) attempt %s failed; retry in %ss", job.pk, job.kind, job.attempts, backoff)


# --------------------------------------------------------------------------------------------
# Recovery and operator actions


def jobs_reap_expired() -> int:
    """Re-queue running jobs whose lease expired (worker killed, OOM); dead after max attempts."""
    now = timezone.now()
    reaped = 0
    expired = list(Job.objects.filter(status=S.RUNNING, lease_expires_at__lt=now).values_list("pk", "attempts",
                                                                                             "max_attempts"))
    for pk, attempts, max_attempts in expired:
        base = Job.objects.filter(pk=pk, status=S.RUNNING, lease_expires_at__lt=now)
        message = f"lease expired after attempt {attempts} (worker lost)"
        if attempts >= max_attempts:
            reaped += base.update(status=S.DEAD, error=message, finished_at=now, lease_expires_at=None)
        else:
            reaped += base.update(status=S.QUEUED, error=message, available_at=now, lease_expires_at=None,
                                  published_at=None, worker="")
    return reaped


def job_retry(job: Job) -> bool:
    """An operator's retry of a dead, failed or cancelled job: a fresh set of attempts."""
    updated = Job.objects.filter(pk=job.pk, status__in=[S.DEAD, S.FAILED, S.CANCELLED]).update(
        status=S.QUEUED, attempts=0, available_at=timezone.now(), published_at=None, finished_at=None, progress=0,
        progress_message="",
    )
    if updated:
        transaction.on_commit(lambda: job_publish(job.pk))
    return bool(updated)


def job_cancel(job: Job) -> bool:
    """Cancel a job that has not started (a running job finishes its attempt)."""
    return bool(
        Job.objects.filter(pk=job.pk, status__in=[S.QUEUED, S.FAILED]).update(
            status=S.CANCELLED, finished_at=timezone.now()
        )
    )


def jobs_counts() -> dict[str, dict[str, int]]:
    from django.db.models import Count

    out: dict[str, dict[str, int]] = {}
    for row in Job.objects.values("kind", "status").annotate(n=Count("pk")).order_by("kind", "status"):
        out.setdefault(row["kind"], {})[row["status"]] = row["n"]
    return out


def run_in_worker(job_id: int) -> str:
    """Entry point of the Celery task."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return _run_in_process(job_id)
    close_old_connections()
    try:
        return job_run(job_id)
    except BaseException:
        # A connection interrupted mid-query (a soft time limit) must not serve the next task.
        connection.close()
        raise
    finally:
        close_old_connections()


def _run_in_process(job_id: int) -> str:
    """The embedded default has no beat to retry later: attempts follow each other at once."""
    while True:
        outcome = job_run(job_id)
        if outcome != "failed":
            return outcome
        if not Job.objects.filter(pk=job_id, status=S.FAILED).update(status=S.QUEUED, available_at=timezone.now()):
            return outcome

