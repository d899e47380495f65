"""The ``platform`` fixture of the integration tests: a Redis server of the test's own, the Celery
app pointed at it, and the worker and beat processes a test starts (stopped at its end)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from cdss.celery import app
from tests.integration.workers import (
    WORKER_ARGS,
    CeleryProcess,
    RedisServer,
    database_url,
    free_port,
    log_tail,
    process_env,
)

OUT = Path(__file__).resolve().parents[2] / "test-output" / "workers"


class Platform:
    def __init__(self, redis: RedisServer, env: dict[str, str], name: str) -> None:
        self.redis = redis
        self.env = env
        self.name = name
        self.processes: list[CeleryProcess] = []

    def worker(self, n: int = 1, **env: str) -> CeleryProcess:
        proc = CeleryProcess([*WORKER_ARGS, "-n", f"{self.name}-{n}@%h"], {**self.env, **env},
                             OUT / f"{self.name}-worker{n}.log")
        self.processes.append(proc.start())
        return proc

    def beat(self, **env: str) -> CeleryProcess:
        schedule = OUT / f"{self.name}-beat-schedule"
        proc = CeleryProcess(["beat", "-s", str(schedule), "--loglevel", "WARNING"], {**self.env, **env},
                             OUT / f"{self.name}-beat.log")
        self.processes.append(proc.start())
        return proc

    def describe(self) -> str:
        """The state at a timeout: jobs by status and whether published, what each queue holds
        in Redis, and the warnings of every process started, for a failure message."""
        import redis
        from django.db.models import Count, Q

        from cdss.models import Job

        jobs = list(Job.objects.values("status").annotate(
            n=Count("pk"), unpublished=Count("pk", filter=Q(published_at__isnull=True))))
        queues: dict[str, object]
        try:
            client = redis.Redis.from_url(self.redis.url, socket_timeout=2)
            queues = {q: client.llen(q) for q in ("default", "risk", "nlp", "imaging")}
            queues["unacked"] = client.hlen("unacked")
        except redis.RedisError as exc:
            queues = {"redis": repr(exc)}
        logs = "\n".join(log_tail(proc.log) for proc in self.processes)
        return f"jobs {jobs}; redis {queues}\n{logs}"

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


@pytest.fixture
def platform(request, settings, tmp_path) -> Iterator[Platform]:
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    saved = (app.conf.broker_url, app.conf.broker_read_url, app.conf.broker_write_url, app.conf.task_always_eager)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = redis.url
    app.conf.task_always_eager = False
    _reset_pools()
    env = process_env(database=database_url(connection.settings_dict), broker=redis.url)
    plat = Platform(redis, env, request.node.name[:40])
    try:
        yield plat
    finally:
        plat.stop()
        redis.stop()
        (app.conf.broker_url, app.conf.broker_read_url, app.conf.broker_write_url,
         app.conf.task_always_eager) = saved
        _reset_pools()


def _reset_pools() -> None:
    """Make the app connect to the broker URL it has now. kombu keeps producer pools in a global
    registry keyed by connection: clear it too, or a later test would get a closed pool back."""
    from kombu import pools

    pools.reset()
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
