"""Real processes for the job platform's integration tests: a Redis server of the test's own
(so that stopping it does not disturb anything else), Celery workers and beat."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float, interval: float = 0.1,
               what: str | Callable[[], str] = "") -> Any:
    """Poll ``check`` until it is true. ``what`` names the wait in the failure; a callable is
    called only then, so that the message tells the state at the timeout, not at the start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {(what() if callable(what) else what) or check}")


class RedisServer:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, timeout=10, what="redis to start")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def log_tail(path: Path, *, lines: int = 15, keep: tuple[str, ...] = ("ERROR", "WARNING", "CRITICAL")) -> str:
    """The last warning and error lines of a worker or beat log, for a failure message."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path.name}: no log)"
    picked = [line[:240] for line in text if any(word in line for word in keep)]
    return f"--- {path.name} ({len(text)} lines) ---\n" + "\n".join(picked[-lines:])


class CeleryProcess:
    """``celery -A cdss worker`` or ``beat`` in its own process group (so kill -9 takes the pool too)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "cdss", *self.args], cwd=ROOT,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()


def database_url(settings_dict: dict[str, Any]) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def process_env(*, database: str, broker: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "CDSS_JOB_", "CDSS_WORKER_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database,
        CELERY_BROKER_URL=broker,
        CDSS_JOB_LEASE_SECONDS="3",
        CDSS_JOB_RETRY_BACKOFF_SECONDS="0",
        CDSS_JOB_REPUBLISH_SECONDS="2",
        CDSS_JOB_REAP_EVERY="1",
        CDSS_JOB_RELAY_EVERY="1",
        CDSS_WORKER_STALL_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


WORKER_ARGS = ["worker", "-P", "prefork", "-c", "2", "-Q", "default,risk,nlp,imaging", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
