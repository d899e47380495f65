"""The job kinds: each app registers its handlers in its AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdss.models import Job

    from .runner import JobContext

QUEUES = ("imaging", "nlp", "risk", "default")

# handler(job, ctx) does the work (no writes of results; may report progress) and returns a
# payload; writer(job, payload) writes the results and returns a small JSON summary for the job
# row, inside the transaction that marks the job succeeded. Without a writer, the payload is
# the summary. A handler that leaves things outside the database for its writer (files in
# storage) names a discarder: discard(job, payload) removes them when the payload is not kept (the
# writer or the status transaction failed, or the lease was lost); a handler that raises cleans up
# after itself.
Handler = Callable[["Job", "JobContext"], Any]
Writer = Callable[["Job", Any], dict[str, Any] | None]
Discarder = Callable[["Job", Any], None]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    writer: Writer | None = None
    discard: Discarder | None = None
    queue: str = "default"
    version: str = "1"
    max_attempts: int | None = None  # None: settings.CDSS_JOB_MAX_ATTEMPTS
    time_limit: int | None = None  # seconds; None: settings.CELERY_TASK_TIME_LIMIT
    description: str = ""
    # Kinds that work on one patient (the patient page's "run" button lists them).
    per_patient: bool = False
    # Population runs ("jobs enqueue KIND --patients all") give each job this many patients
    # (params["patient_ids"]); 1 means one job per patient.
    batch_size: int = 1


_KINDS: dict[str, JobKind] = {}


class UnknownJobKind(LookupError):
    pass


def register(kind: JobKind) -> JobKind:
    if kind.queue not in QUEUES:
        raise ValueError(f"job kind {kind.name!r}: unknown queue {kind.queue!r} (one of {', '.join(QUEUES)})")
    existing = _KINDS.get(kind.name)
    if existing is not None and existing.handler is not kind.handler:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def job_kind(
    name: str, *, writer: Writer | None = None, queue: str = "default", version: str = "1", max_attempts: int | None = None,
    time_limit: int | None = None, description: str = "", per_patient: bool = False, discard: Discarder | None = None,
) -> Callable[[Handler], Handler]:
    """Decorator form of ``register``."""

    def wrap(handler: Handler) -> Handler:
        register(JobKind(name=name, handler=handler, writer=writer, discard=discard, queue=queue, version=version,
                         max_attempts=max_attempts, time_limit=time_limit,
                         description=description or (handler.__doc__ or "").strip(), per_patient=per_patient))
        return handler

    return wrap


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownJobKind(f"no job kind {name!r} is registered") from None


def all_kinds() -> list[JobKind]:
    return sorted(_KINDS.values(), key=lambda k: k.name)


_RESIDENT: dict[str, Any] = {}


def load_once(name: str, loader: Callable[[], Any]) -> Any:
    """A model (or other heavy resource) loaded on first use and kept for the life of the worker
    process. Prefork children load their own copy after the fork, never the parent's."""
    if name not in _RESIDENT:
        _RESIDENT[name] = loader()
    return _RESIDENT[name]
