"""The job platform against real processes: Redis, PostgreSQL, Celery workers and beat.

Each test gets a Redis server of its own on a free port (stopping it disturbs nothing else),
real ``celery worker`` and ``celery beat`` processes on the test database, and proves a
guarantee of cdss.jobs: every job done, exactly once, through crashes and broker outages.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from cdss.jobs import runner
from cdss.models import Job
from tests.integration.workers import CeleryProcess, wait_until
from tests.jobsapp.models import ProbeResult

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="workers share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.django_db(transaction=True),
]
S = Job.Status


def enqueue(kind: str, keys: list[str], **params: object) -> list[int]:
    with transaction.atomic():
        return [runner.job_enqueue(kind=kind, params={"key": key, **params}).pk for key in keys]


def all_done(n: int) -> bool:
    return Job.objects.filter(status=S.SUCCEEDED).count() == n


def test_200_jobs_all_succeed_and_each_result_is_written_once(platform):
    platform.worker()
    keys = [f"k{i}" for i in range(200)]
    enqueue("test.probe", keys)
    wait_until(lambda: all_done(200), timeout=90, what="200 jobs to succeed")
    assert ProbeResult.objects.count() == 200
    assert set(ProbeResult.objects.values_list("key", flat=True)) == set(keys)
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(platform):
    platform.beat()
    first = platform.worker(1)
    keys = [f"s{i}" for i in range(30)]
    enqueue("test.slow", keys, seconds=0.4)
    wait_until(lambda: Job.objects.filter(status=S.SUCCEEDED).count() >= 4
               and Job.objects.filter(status=S.RUNNING).exists(), timeout=60, what="the batch to be under way")
    first.kill9()
    interrupted = set(Job.objects.filter(status=S.RUNNING).values_list("pk", flat=True))
    assert interrupted  # the kill landed mid-job
    platform.worker(2)
    # lease 3 s + reaper every 1 s: well within a minute
    wait_until(lambda: all_done(30), timeout=90, what=lambda: f"all jobs to succeed after the kill; now {platform.describe()}")
    assert ProbeResult.objects.count() == 30
    assert {r for r in ProbeResult.objects.values_list("key", flat=True)} == set(keys)
    assert all(a >= 2 for a in Job.objects.filter(pk__in=interrupted).values_list("attempts", flat=True))


# kombu 5.7's Redis transport, on a lost connection, may restore the worker's unacknowledged
# messages through a connection it has already released, and the worker stops (README, "Procfile":
# a supervisor starts it again; the jobs wait in their rows meanwhile).
KOMBU_LOST_CONNECTION_CRASH = "Unrecoverable error: AttributeError(\"'NoneType' object has no attribute 'hostname'\")"


def supervise(worker: CeleryProcess, log_from: int, restarts: list[str]) -> None:
    """What a supervisor does for a worker that exited: starts it again, once, and only after
    kombu's crash on a lost connection (any other exit fails the test)."""
    if worker.proc is None or worker.proc.poll() is None or restarts:
        return
    with worker.log.open("rb") as fh:
        fh.seek(log_from)
        written = fh.read().decode(errors="replace")
    assert KOMBU_LOST_CONNECTION_CRASH in written, f"the worker exited (status {worker.proc.returncode})"
    restarts.append("kombu's crash on the lost connection")
    worker.start()


def test_jobs_created_while_redis_is_down_run_when_it_returns(platform):
    beat = platform.beat()
    worker = platform.worker()
    log_from = worker.log.stat().st_size
    restarts: list[str] = []
    enqueue("test.probe", ["before"])
    wait_until(lambda: all_done(1), timeout=60, what="the first job")
    platform.redis.stop()
    keys = [f"d{i}" for i in range(20)]
    started = time.monotonic()
    ids = []
    for half in (keys[:10], keys[10:]):  # jobs made across an outage long enough for the worker
        ids += enqueue("test.probe", half)  # and beat to fall into their reconnect loops
        time.sleep(6)
    enqueue_seconds = time.monotonic() - started - 12
    assert enqueue_seconds < 2  # a failed publish does not hang the caller
    assert Job.objects.filter(pk__in=ids, status=S.QUEUED, published_at__isnull=True).count() == 20
    platform.redis.start()  # same port, empty: every message sent before is gone
    wait_until(lambda: supervise(worker, log_from, restarts) or all_done(21), timeout=120,
               what=lambda: f"the jobs made during the outage; now {platform.describe()}")
    assert ProbeResult.objects.filter(key__in=keys).count() == 20
    beat_log = beat.log.read_text(errors="replace")
    assert "Connection refused" in beat_log  # the outage is in beat's log, without the tracebacks of
    assert "Traceback" not in beat_log  # each failed publish (cdss.celery.OneLineBeatErrors)


def test_queue_depths_counts_the_waiting_messages_and_says_when_the_broker_is_down(platform):
    enqueue("test.probe", ["a", "b", "c"])  # no worker: the three messages wait in "risk"
    assert runner.queue_depths({"risk", "nlp"}) == {"risk": 3, "nlp": 0}
    platform.redis.stop()
    started = time.monotonic()
    assert runner.queue_depths({"risk"}) is None
    assert time.monotonic() - started < 5  # the worker's event loop calls it: it must not hang


def deafen_the_worker() -> None:
    """The test workers' control command (tests/jobsapp/control.py): the task consumer stops
    receiving, as kombu's Redis transport left it after some reconnections."""
    from cdss.celery import app

    replies = app.control.broadcast("cdss_test_deafen", reply=True, limit=1, timeout=10)
    assert replies and "1 socket(s) deafened" in str(replies), replies


def test_a_worker_that_stops_receiving_tasks_connects_again(platform):
    platform.beat()  # the relay too: a message the deaf consumer took off the queue is published again
    worker = platform.worker()  # checks every 2 s (CDSS_WORKER_STALL_SECONDS, tests/integration/workers.py)
    enqueue("test.probe", ["w0"])
    wait_until(lambda: all_done(1), timeout=60, what="the first job")
    deafen_the_worker()
    keys = [f"w{i}" for i in range(1, 6)]
    enqueue("test.probe", keys)
    wait_until(lambda: all_done(6), timeout=90, what=lambda: f"the jobs sent to the deaf worker; now {platform.describe()}")
    assert ProbeResult.objects.filter(key__in=keys).count() == 5
    assert "received no task" in worker.log.read_text(errors="replace")  # the check did it, and said so


def test_without_the_check_a_deaf_worker_stays_deaf(platform):
    """The control experiment for the test above: the deafening is real and nothing else repairs it."""
    platform.beat()
    worker = platform.worker(CDSS_WORKER_STALL_SECONDS="0")
    enqueue("test.probe", ["q0"])
    wait_until(lambda: all_done(1), timeout=60, what="the first job")
    deafen_the_worker()
    enqueue("test.probe", [f"q{i}" for i in range(1, 6)])
    time.sleep(10)  # five checks' worth at the other test's interval
    assert Job.objects.filter(status=S.QUEUED).count() == 5, platform.describe()
    assert "received no task" not in worker.log.read_text(errors="replace")


def test_a_job_that_always_raises_ends_dead_with_its_error(platform):
    platform.beat()
    platform.worker()
    (job_id,) = enqueue("test.fail", ["f"])
    wait_until(lambda: Job.objects.filter(pk=job_id, status=S.DEAD).exists(), timeout=60,
               what=lambda: f"the failing job to be dead; now {platform.describe()}")
    job = Job.objects.get(pk=job_id)
    assert job.attempts == 3
    assert "the test job failed on purpose" in job.error


def test_running_a_jobs_task_twice_by_hand_does_not_duplicate_its_result(platform):
    from cdss.tasks import run_job_task

    (job_id,) = enqueue("test.probe", ["hand"])
    assert run_job_task(job_id) == "succeeded"
    assert run_job_task(job_id) == "not-claimed"
    platform.worker()  # the published message reaches a real worker too: it claims nothing
    run_job_task.apply_async(args=[job_id], queue="risk")
    wait_until(lambda: _worker_saw_nothing_to_do(platform.redis.url), timeout=30,
               what="the worker to drain its queue")
    assert ProbeResult.objects.filter(key="hand").count() == 1
    assert Job.objects.get(pk=job_id).attempts == 1


def _worker_saw_nothing_to_do(broker_url: str) -> bool:
    """The message was taken from the queue and acknowledged (kombu's Redis transport keeps
    delivered, unacknowledged messages in the "unacked" hash)."""
    import redis

    # The test's own Redis (app.conf.broker_url would answer CELERY_BROKER_URL from the
    # environment: Celery reads that variable first).
    client = redis.Redis.from_url(broker_url)
    return client.llen("risk") == 0 and client.hlen("unacked") == 0


def test_a_prefork_worker_starts_the_imaging_decode_processes_and_they_end_with_it(platform):
    from tests.imaging.test_ml_pipeline import alive

    worker = platform.worker()
    (pk,) = enqueue("test.decode_processes", ["d0"])
    wait_until(lambda: Job.objects.filter(pk=pk, status=S.SUCCEEDED).exists(), timeout=60,
               what="the decode job to succeed")
    result = Job.objects.get(pk=pk).result
    assert result["daemon"] is True  # started from Celery's daemonic pool process all the same
    assert len(result["pids"]) == 2 and result["shape"] == [4, 4]
    assert result["torch_in_workers"] is False
    assert result["same_through_shared_memory"] is True and result["shm_error"] == ""
    assert result["shm_blocks"] and all(Path("/dev/shm", name).exists() for name in result["shm_blocks"])

    assert all(alive(pid) for pid in result["pids"])
    worker.stop()
    wait_until(lambda: not any(alive(pid) for pid in result["pids"]), timeout=20,
               what="the decode processes to end with their worker")
    # the worker's shared memory is gone with it (unlinked at exit, or by its resource tracker)
    wait_until(lambda: not any(Path("/dev/shm", name).exists() for name in result["shm_blocks"]), timeout=20,
               what="the decode processes' shared memory to be unlinked")
