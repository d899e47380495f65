#!/usr/bin/env python
"""Benchmark: the job platform (cdss.jobs) with one real Celery worker, Redis and PostgreSQL.

    .venv/bin/python bench/jobs.py [--database-url postgres://postgres@127.0.0.1:5432/cdss_bench_jobs]
        [--concurrency 2] [--latency-jobs 200] [--throughput-jobs 2000] [--overhead-jobs 500] [--profile]
        [--experiment NAME ...]

Recreates the named database (it must be a scratch database) and migrates it, starts a Redis
server of its own on a free port and ONE worker process (``celery -A cdss worker -P prefork -c N``
on every queue), and measures with the trivial job kind ``test.probe`` (settings
``tests.settings``):

- machinery overhead: ``cdss.jobs.runner.job_run`` in this process (no broker) against the kind's
  bare handler + writer in one transaction; the difference per job is the cost of the claim, the
  lease and the status transaction. Also the SQL queries per ``job_run``.
- enqueue-to-start latency when idle: one job at a time, each enqueued in its own transaction,
  the next only after it succeeded; latency = ``Job.started_at - Job.created_at`` as stored in
  the job row (the caller and the worker run on this machine: one clock).
- throughput: N jobs enqueued in one transaction (the enqueue rate is printed too), then the time
  from commit until every job has succeeded.

With ``--profile``, py-spy samples the worker (all its processes) and this process during the
throughput run and the script prints where the time went. ``--experiment NAME`` (repeatable)
measures a candidate change to the runner or the settings instead, monkeypatched here and in the
worker; without it the script measures the code as it is. Prints figures beside the goals;
asserts only that every job succeeded once.

Settings: ``tests.settings`` (for ``test.probe``), debug off, the job settings' defaults unless
the environment sets them; the worker gets the same environment.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402
from tests.integration.workers import CeleryProcess, RedisServer, free_port, wait_until  # noqa: E402

KIND = "test.probe"
GOAL_P95_MS = 50.0
GOAL_JOBS_PER_S = 300.0




def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "meets the goal" if ok else "MISSES the goal"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# --------------------------------------------------------------------------------------------
# Machinery overhead, in-process


def measure_overhead(n: int) -> None:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from cdss.jobs import runner
    from cdss.jobs.registry import get_kind
    from cdss.models import Job

    spec = get_kind(KIND)
    assert spec.writer is not None
    writer = spec.writer
    warm = 50
    now = timezone.now()
    rows = Job.objects.bulk_create(
        Job(kind=KIND, queue=spec.queue, params={"key": f"ovh-{i}"}, version=spec.version,
            idempotency_key=f"bench-overhead-{i}", max_attempts=3, available_at=now)
        for i in range(n + warm + 1)
    )
    ids = [job.pk for job in rows]
    # Unsaved Job objects stand in for the job: the handler reads params, the writer pk and worker.
    fakes = [Job(pk=10_000_000 + i, kind=KIND, params={"key": f"bare-{i}"}, worker="bench")
             for i in range(n + warm + 1)]

    def bare(job: Job) -> None:
        with transaction.atomic():
            writer(job, spec.handler(job, None))  # type: ignore[arg-type]

    def run(job_id: int) -> None:
        outcome = runner.job_run(job_id)
        assert outcome == "succeeded", outcome

    for i in range(warm):
        bare(fakes[i])
        run(ids[i])
    bare_times: list[float] = []
    run_times: list[float] = []
    for i in range(warm, warm + n):  # interleaved, so that drift affects both alike
        start = time.perf_counter()
        bare(fakes[i])
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        run(ids[i])
        run_times.append(time.perf_counter() - start)
    with CaptureQueriesContext(connection) as bare_q:
        bare(fakes[n + warm])
    with CaptureQueriesContext(connection) as run_q:
        run(ids[n + warm])

    # One part of the machinery on its own: the lease heartbeat thread a job_run starts and stops.
    ctx = runner.JobContext(job=Job.objects.get(pk=ids[0]), worker="bench")
    start = time.perf_counter()
    for _ in range(n):
        with runner._Heartbeat(ctx):
            pass
    heartbeat = (time.perf_counter() - start) / n

    mean_bare, mean_run = statistics.fmean(bare_times), statistics.fmean(run_times)
    med_bare, med_run = statistics.median(bare_times), statistics.median(run_times)
    print(f"\n== machinery overhead (in-process, no broker; {n} jobs, interleaved after {warm} warm-up) ==")
    print(f"bare handler+writer in one transaction: mean {ms(mean_bare)}, median {ms(med_bare)}, "
          f"{len(bare_q.captured_queries)} queries")
    print(f"runner.job_run:                          mean {ms(mean_run)}, median {ms(med_run)}, "
          f"{len(run_q.captured_queries)} queries")
    print(f"overhead of the job machinery per job:   mean {ms(mean_run - mean_bare)}, "
          f"median {ms(med_run - med_bare)} "
          f"({len(run_q.captured_queries) - len(bare_q.captured_queries)} extra queries)")
    print(f"  of which the lease heartbeat thread (start + stop, no query): {ms(heartbeat)}")
    print("queries of one job_run:")
    for query in run_q.captured_queries:
        print(f"  {query['sql'][:110]}")
    print(f"job_run in one process, one job after another: {1 / mean_run:,.0f} jobs/s")


# --------------------------------------------------------------------------------------------
# With a real worker


class Worker:
    def __init__(self, concurrency: int, env: dict[str, str], log: Path) -> None:
        self.concurrency = concurrency
        self.proc = CeleryProcess(
            ["worker", "-P", "prefork", "-c", str(concurrency), "-Q", "default,risk,nlp,imaging",
             "-n", "bench@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "WARNING"],
            env, log,
        )

    def start(self) -> None:
        from cdss.celery import app

        self.proc.start()
        wait_until(lambda: app.control.ping(timeout=0.5), timeout=60, what="the worker to answer a ping")

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def stop(self) -> None:
        self.proc.stop()


def enqueue_and_wait(key: str) -> tuple[int, float]:
    """One job in its own transaction; returns its id and the wall time until it was seen done."""
    from django.db import transaction

    from cdss.jobs import runner
    from cdss.models import Job

    start = time.perf_counter()
    with transaction.atomic():
        job = runner.job_enqueue(kind=KIND, params={"key": key})
    done = Job.objects.filter(pk=job.pk, status=Job.Status.SUCCEEDED)
    wait_until(done.exists, timeout=30, interval=0.001, what=f"job {job.pk} to succeed")
    return job.pk, time.perf_counter() - start


def measure_latency(n: int) -> float:
    from cdss.models import Job

    for i in range(20):  # warm-up: both pool processes import, connect, and take a job
        enqueue_and_wait(f"warm-{i}")
    ids, walls = [], []
    for i in range(n):
        pk, wall = enqueue_and_wait(f"lat-{i}")
        ids.append(pk)
        walls.append(wall)
    rows: list[tuple[Any, Any, Any, Any]] = list(
        Job.objects.filter(pk__in=ids).values_list("created_at", "published_at", "started_at", "finished_at"))
    assert len(rows) == n and all(all(row) for row in rows)
    start = [(s - c).total_seconds() for c, _, s, _ in rows]
    publish = [(p - c).total_seconds() for c, p, _, _ in rows]
    deliver = [(s - p).total_seconds() for _, p, s, _ in rows]
    run = [(f - s).total_seconds() for _, _, s, f in rows]
    p95 = pct(start, 95)
    print(f"\n== enqueue-to-start latency when idle ({n} jobs, one at a time) ==")
    print(f"started_at - created_at: p50 {ms(pct(start, 50))}, p95 {ms(p95)}, max {ms(max(start))} "
          f"(goal: p95 < {GOAL_P95_MS:.0f} ms: {verdict(p95 * 1000 < GOAL_P95_MS)})")
    print(f"  created -> published (insert, commit, publish): p50 {ms(pct(publish, 50))}, "
          f"p95 {ms(pct(publish, 95))}")
    print(f"  published -> started (broker, worker, claim):   p50 {ms(pct(deliver, 50))}, "
          f"p95 {ms(pct(deliver, 95))}")
    print(f"  started -> finished (handler, writer, status):  p50 {ms(pct(run, 50))}, p95 {ms(pct(run, 95))}")
    print(f"enqueue call to success seen by the caller (1 ms polling): p50 {ms(pct(walls, 50))}, "
          f"p95 {ms(pct(walls, 95))}")
    return p95


def measure_throughput(n: int, profiler: Profiler | None) -> float:
    from django.db import transaction
    from django.db.models import Max, Min

    from cdss.jobs import runner
    from cdss.models import Job
    from tests.jobsapp.models import ProbeResult

    marks: dict[str, float] = {}
    if profiler:
        profiler.start()
    start = time.perf_counter()
    with transaction.atomic():
        # Registered first, so it runs first after the commit, before the publishes.
        transaction.on_commit(lambda: marks.setdefault("committed", time.perf_counter()))
        ids = [runner.job_enqueue(kind=KIND, params={"key": f"tp-{i}"}).pk for i in range(n)]
        marks["enqueued"] = time.perf_counter()
    marks["published"] = time.perf_counter()
    done = Job.objects.filter(pk__gte=min(ids), pk__lte=max(ids), status=Job.Status.SUCCEEDED)
    wait_until(lambda: done.count() == n, timeout=600, interval=0.02, what=f"{n} jobs to succeed")
    marks["succeeded"] = time.perf_counter()
    if profiler:
        profiler.stop()

    enqueue_s = marks["enqueued"] - start
    commit_s = marks["committed"] - marks["enqueued"]
    publish_s = marks["published"] - marks["committed"]
    total_s = marks["succeeded"] - marks["committed"]
    span = Job.objects.filter(pk__in=ids).aggregate(first=Min("started_at"), last=Max("finished_at"))
    worker_s = (span["last"] - span["first"]).total_seconds()
    rate = n / total_s
    assert ProbeResult.objects.filter(key__startswith="tp-").count() == n
    assert set(Job.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    print(f"\n== throughput ({n} jobs enqueued in one transaction) ==")
    print(f"enqueue: {n} jobs in {enqueue_s:.2f} s = {n / enqueue_s:,.0f} jobs/s (inside the transaction); "
          f"commit {ms(commit_s)}")
    print(f"publish after commit (on_commit, in the caller): {publish_s:.2f} s = {n / publish_s:,.0f} messages/s")
    print(f"commit -> all succeeded: {total_s:.2f} s = {rate:,.1f} jobs/s "
          f"(goal: >= {GOAL_JOBS_PER_S:.0f} jobs/s: {verdict(rate >= GOAL_JOBS_PER_S)})")
    print(f"first start -> last finish (job rows): {worker_s:.2f} s = {n / worker_s:,.0f} jobs/s")
    return rate


# --------------------------------------------------------------------------------------------
# Profiling with py-spy


class Profiler:
    """py-spy on the worker (main process and pool) and on this process, raw collapsed stacks."""

    def __init__(self, worker_pid: int, workdir: Path) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if not spy:
            sys.exit("--profile needs py-spy (pip install py-spy)")
        self.spy: str = spy
        self.targets = {"worker": (worker_pid, True), "caller": (os.getpid(), False)}
        self.files = {name: workdir / f"profile-{name}.txt" for name in self.targets}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for name, (pid, children) in self.targets.items():
            cmd = [self.spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--idle",
                   "--nonblocking", "-o", str(self.files[name])]
            if children:
                cmd.append("--subprocesses")
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def report(self) -> None:
        print("\n== profile of the throughput run (py-spy --idle: wall time, waits included) ==")
        if not all(path.exists() for path in self.files.values()):
            print("no profile written (py-spy failed to attach?)")
            return
        worker = parse_collapsed(self.files["worker"])
        pool = {k: v for k, v in worker.items() if len(_processes(k)) > 1}
        main = {k: v for k, v in worker.items() if len(_processes(k)) == 1}
        in_task = {k: v for k, v in pool.items() if "run_job_task (" in k}
        pool_total, task_total = sum(pool.values()), sum(in_task.values())
        if pool_total:
            print(f"worker pool ({len({_processes(k)[-1] for k in pool})} processes): inside a task "
                  f"{100 * task_total / pool_total:.0f}% of the time; the rest is waiting for the next message "
                  "and Celery's work around the task")
        summarize("inside the task (cdss.run_job)", in_task, WORKER_PARTS)
        summarize("the worker's main process (broker I/O, dispatch to the pool)", main, [])
        caller = {k: v for k, v in parse_collapsed(self.files["caller"]).items()
                  if "measure_throughput (" in k and "Profiler." not in k}
        summarize("the caller (enqueue, commit, publish, then polling)", caller, CALLER_PARTS)
        print(f"raw stacks: {self.files['worker']}, {self.files['caller']}")


def summarize(title: str, stacks: dict[str, int], parts: list[tuple[str, Callable[[str], bool]]]) -> None:
    total = sum(stacks.values())
    if not total:
        print(f"{title}: no samples")
        return
    print(f"{title}: {total} samples")
    shares: Counter[str] = Counter()
    for stack, count in stacks.items():
        for label, test in parts:
            if test(stack):
                shares[label] += count
                break
        else:
            shares["other"] += count
    if parts:
        for label, count in shares.most_common():
            print(f"  {100 * count / total:5.1f}%  {label}")
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack.rsplit(";", 1)[-1]] += count
    print("  top frames (self):")
    for frame, count in leaves.most_common(6):
        print(f"    {100 * count / total:5.1f}%  {frame[:110]}")


def _processes(stack: str) -> list[str]:
    return [part.split(":", 1)[0] for part in stack.split(";") if part.startswith("process ")]


def parse_collapsed(path: Path) -> dict[str, int]:
    stacks: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _has(*names: str) -> Callable[[str], bool]:
    return lambda stack: any(name in stack for name in names)


# First match wins: the most specific parts of a job's life first.
WORKER_PARTS: list[tuple[str, Callable[[str], bool]]] = [
    ("opening a database connection", _has("get_new_connection (", "init_connection_state (")),
    ("claim (UPDATE + SELECT of the job)", _has("job_claim (", "_claim_returning (")),
    ("lease heartbeat thread start/stop", _has("_Heartbeat", "SharedHeartbeat", "__enter__ (cdss/jobs",
                                                "__exit__ (cdss/jobs")),
    ("handler", _has("probe (tests/jobsapp")),
    ("writer (get_or_create of the result)", _has("_write (tests/jobsapp")),
    ("status UPDATE + commit", _has("job_run (cdss/jobs/runner.py")),
    ("close_old_connections (before/after)", _has("close_old_connections")),
    ("celery: task tracing, acks, result/state bookkeeping", _has("trace_task", "_fast_trace_task")),
]
CALLER_PARTS: list[tuple[str, Callable[[str], bool]]] = [
    ("publish: apply_async to Redis", _has("apply_async")),
    ("publish: SELECT + UPDATE of the job", _has("job_publish (", "_publish_many (")),
    ("enqueue: INSERT ... ON CONFLICT", _has("bulk_create")),
    ("enqueue: SELECT back by key", _has("job_enqueue (", "_enqueue_bulk_publish (")),
    ("commit", _has("django/db/transaction.py")),
    ("waiting for the jobs (polling count)", _has("wait_until")),
]


# --------------------------------------------------------------------------------------------
# Experiments (--experiment NAME): candidate changes, monkeypatched in this process and in the
# worker's pool processes, to measure them before changing cdss/jobs/runner.py or the settings.
# Without the flag the script measures the real code.

EXPERIMENTS = {
    "db-reuse": "CELERY_DB_REUSE_MAX=1000: Celery's Django fixup no longer closes the database connection "
                "before and after every task",
    "shared-heartbeat": "one lease-renewing thread per process instead of a new thread per job",
    "claim-returning": "claim with UPDATE ... RETURNING: one query instead of UPDATE + SELECT",
    "bulk-publish": "publish a transaction's jobs together after commit: one SELECT, one UPDATE, one producer",
    "prefetch-4": "CELERY_WORKER_PREFETCH_MULTIPLIER=4: the worker holds the next messages while its pool works",
}


def experiment_settings(workdir: Path, names: list[str]) -> str:
    """A settings module for the worker: tests.settings plus the experiments."""
    module = "bench_jobs_experiment_settings"
    lines = ["from tests.settings import *  # noqa: F403", f"CDSS_BENCH_EXPERIMENTS = {names!r}"]
    if "db-reuse" in names:
        lines.append("CELERY_DB_REUSE_MAX = 1000")
    if "prefetch-4" in names:
        lines.append("CELERY_WORKER_PREFETCH_MULTIPLIER = 4")
    lines += ["from bench.jobs import connect_worker_experiments", "connect_worker_experiments(CDSS_BENCH_EXPERIMENTS)"]
    (workdir / f"{module}.py").write_text("\n".join(lines) + "\n")
    return module


def connect_worker_experiments(names: list[str]) -> None:
    from celery.signals import worker_process_init

    def patch(**kwargs: Any) -> None:
        apply_experiments(names)

    worker_process_init.connect(patch, weak=False)


def apply_experiments(names: list[str]) -> None:
    from cdss.jobs import runner

    if "shared-heartbeat" in names:
        runner._Heartbeat = _shared_heartbeat_class()  # type: ignore[misc, assignment]
    if "claim-returning" in names:
        runner.job_claim = _claim_returning
    if "bulk-publish" in names:
        runner.job_enqueue = _enqueue_bulk_publish


def _shared_heartbeat_class() -> type:
    import threading

    from cdss.jobs import runner

    lock = threading.Lock()
    running: dict[int, Any] = {}
    state: dict[str, threading.Thread | None] = {"thread": None}

    def loop() -> None:
        while True:
            time.sleep(max(1.0, runner.lease_seconds() / 3))
            with lock:
                contexts = list(running.values())
            for ctx in contexts:
                ctx.renew()

    class SharedHeartbeat:
        def __init__(self, ctx: Any) -> None:
            self.ctx = ctx

        def __enter__(self) -> SharedHeartbeat:
            with lock:
                running[id(self)] = self.ctx
                thread = state["thread"]
                if thread is None or not thread.is_alive():  # first job in this process (after fork)
                    thread = threading.Thread(target=loop, name="job-leases", daemon=True)
                    thread.start()
                    state["thread"] = thread
            return self

        def __exit__(self, *exc: object) -> None:
            with lock:
                running.pop(id(self), None)

    return SharedHeartbeat


def _claim_returning(job_id: int, worker: str) -> Any:
    from datetime import timedelta

    from django.utils import timezone

    from cdss.jobs import runner
    from cdss.models import Job

    now = timezone.now()
    lease = now + timedelta(seconds=runner.lease_seconds())
    table = Job._meta.db_table
    rows = list(Job.objects.raw(
        f'UPDATE "{table}" SET status = %s, attempts = attempts + 1, worker = %s, started_at = %s, '
        f"lease_expires_at = %s, progress = 0, progress_message = '' "
        f"WHERE id = %s AND status = %s AND available_at <= %s RETURNING *",
        [Job.Status.RUNNING, worker, now, lease, job_id, Job.Status.QUEUED, now],
    ))
    return rows[0] if rows else None


def _enqueue_bulk_publish(*, kind: str, patient: Any = None, target: Any = None, params: dict[str, Any] | None = None,
                          inputs: Any = None, user: Any = None, key: str | None = None) -> Any:
    """runner.job_enqueue, except that the jobs of one transaction are published together."""
    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from cdss.jobs import runner
    from cdss.jobs.registry import get_kind
    from cdss.models import Job

    spec = get_kind(kind)
    params = params or {}
    target_type = f"{target._meta.app_label}.{target._meta.model_name}" if target is not None else ""
    target_id = str(target.pk) if target is not None else ""
    digest = runner.input_hash({"params": params, "inputs": inputs})
    if key is None:
        scope = f"{target_type}:{target_id}" if target is not None else f"patient:{getattr(patient, 'pk', '')}"
        key = f"{kind}|{scope}|{digest}|v{spec.version}"
    job = Job(kind=kind, queue=spec.queue, patient=patient, target_type=target_type, target_id=target_id,
              params=params, input_hash=digest, version=spec.version, idempotency_key=key,
              max_attempts=spec.max_attempts or int(settings.CDSS_JOB_MAX_ATTEMPTS), available_at=timezone.now(),
              created_by=user if getattr(user, "is_authenticated", False) else None)
    Job.objects.bulk_create([job], ignore_conflicts=True)
    job = Job.objects.get(idempotency_key=key)
    if job.status == Job.Status.QUEUED and job.published_at is None:
        if not connection.in_atomic_block:
            _publish_many([job.pk])
        else:
            pending: list[int] | None = getattr(connection, "_bench_pending", None)
            flush = getattr(connection, "_bench_flush", None)
            if pending is None or not any(entry[1] is flush for entry in connection.run_on_commit):
                pending = []
                flush = _flusher(pending)
                connection._bench_pending, connection._bench_flush = pending, flush  # type: ignore[attr-defined]
                transaction.on_commit(flush)
            pending.append(job.pk)
    return job


def _flusher(pending: list[int]) -> Callable[[], None]:
    return lambda: _publish_many(pending)


def _publish_many(ids: list[int]) -> None:
    from django.conf import settings
    from django.utils import timezone

    from cdss.celery import app
    from cdss.jobs.registry import get_kind
    from cdss.models import Job
    from cdss.tasks import run_job_task

    waiting = [Job.Status.QUEUED, Job.Status.FAILED]
    for i in range(0, len(ids), 500):
        rows = list(Job.objects.filter(pk__in=ids[i:i + 500], status__in=waiting).values_list("pk", "queue", "kind"))
        Job.objects.filter(pk__in=[pk for pk, _, _ in rows], status__in=waiting).update(
            status=Job.Status.QUEUED, published_at=timezone.now())
        sent = 0
        try:
            with app.producer_or_acquire() as producer:
                for pk, queue, kind in rows:
                    limit = get_kind(kind).time_limit or int(settings.CELERY_TASK_TIME_LIMIT)
                    run_job_task.apply_async(args=[pk], queue=queue, time_limit=limit,
                                             soft_time_limit=max(1, limit - 30), retry=False, producer=producer)
                    sent += 1
        except Exception:  # noqa: BLE001 - broker down: the relay publishes the rest
            Job.objects.filter(pk__in=[pk for pk, _, _ in rows[sent:]], status=Job.Status.QUEUED).update(
                published_at=None)
            return


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_jobs")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes of the one worker")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--throughput-jobs", type=int, default=2000)
    parser.add_argument("--overhead-jobs", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="py-spy the throughput run and report")
    parser.add_argument("--experiment", action="append", default=[], choices=sorted(EXPERIMENTS),
                        help="measure a candidate change instead of the real code (repeatable)")
    args = parser.parse_args()
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        sys.exit("redis-server is not installed")

    recreate_database(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="cdss-bench-jobs-"))
    redis = RedisServer(free_port(), workdir)
    redis.start()
    worker: Worker | None = None
    try:
        # The same settings here and in the worker: tests.settings for the trivial kinds, debug off
        # (no per-query logging), the job settings' defaults unless the environment sets them.
        os.environ.update(DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=args.database_url,
                          CELERY_BROKER_URL=redis.url, PYTHONUNBUFFERED="1")
        os.environ.setdefault("DJANGO_DEBUG", "false")
        os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(40))
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        worker_env = dict(os.environ)
        if args.experiment:
            apply_experiments(args.experiment)
            worker_env.update(DJANGO_SETTINGS_MODULE=experiment_settings(workdir, args.experiment),
                              PYTHONPATH=os.pathsep.join([str(workdir), str(ROOT)]))
            for name in args.experiment:
                print(f"EXPERIMENT {name}: {EXPERIMENTS[name]}")
        print(f"database: PostgreSQL {connection.cursor().connection.info.server_version} ({args.database_url}); "
              f"redis: {redis.url}; {os.cpu_count()} CPUs")
        print(f"settings: {os.environ['DJANGO_SETTINGS_MODULE']}, DEBUG={settings.DEBUG}, "
              f"CONN_MAX_AGE={settings.DATABASES['default'].get('CONN_MAX_AGE')}, "
              f"lease {settings.CDSS_JOB_LEASE_SECONDS} s, "
              f"prefetch multiplier {settings.CELERY_WORKER_PREFETCH_MULTIPLIER}, "
              f"acks_late={settings.CELERY_TASK_ACKS_LATE}, "
              f"CELERY_DB_REUSE_MAX={getattr(settings, 'CELERY_DB_REUSE_MAX', None)}")
        print(f"job kind: {KIND} (handler returns its key; writer get_or_create of one row)")

        measure_overhead(args.overhead_jobs)

        worker = Worker(args.concurrency, worker_env, workdir / "worker.log")
        worker.start()
        print(f"\nworker: ONE process, celery -A cdss worker -P prefork -c {args.concurrency} "
              f"(concurrency {args.concurrency}), all queues")
        p95 = measure_latency(args.latency_jobs)
        profiler = Profiler(worker.pid, workdir) if args.profile else None
        rate = measure_throughput(args.throughput_jobs, profiler)
        if profiler:
            profiler.report()
        print(f"\n== goals (one worker, concurrency {args.concurrency}, {os.cpu_count()} CPUs) ==")
        print(f"p95 enqueue-to-start when idle: {ms(p95)} (goal < {GOAL_P95_MS:.0f} ms): "
              f"{verdict(p95 * 1000 < GOAL_P95_MS)}")
        print(f"throughput of a trivial job: {rate:,.1f} jobs/s (goal >= {GOAL_JOBS_PER_S:.0f} jobs/s): "
              f"{verdict(rate >= GOAL_JOBS_PER_S)}")
    except BaseException:
        log = workdir / "worker.log"
        if log.exists():
            print("--- worker log (tail) ---", file=sys.stderr)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        if worker:
            worker.stop()
        redis.stop()
    if not args.profile:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
