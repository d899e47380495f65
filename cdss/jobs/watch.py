"""A worker's check on its own task consumer: one that has gone deaf is connected again.

After a broker outage Celery's consumer connects again by itself, but kombu's Redis transport has
had bugs (celery/kombu#2007, #2629) after which the worker stays connected and answers control
commands yet never receives another task: its jobs wait in Redis for ever, and the relay cannot
help (it runs on the workers). This step notices such a worker from outside the transport's state.
Every ``CDSS_WORKER_STALL_SECONDS`` it reads how many messages wait in the queues the worker
consumes; when two checks in a row find messages waiting while the worker had room for more and
received none in between, it logs an error and raises a connection error in the worker's event
loop, which makes Celery drop the connection and connect again, as after any broker outage.

Counts only: no message is read, nothing about a job or a patient is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import bootsteps, signals
from celery.worker import state as worker_state
from django.conf import settings

log = logging.getLogger("cdss.jobs")

_received = [0]


@signals.task_received.connect(weak=False)
def _count_received(sender: Any = None, **kwargs: Any) -> None:
    _received[0] += 1


class ConsumerStalled(OSError):
    """Raised in the worker's event loop: an OSError is one of the broker connection errors on
    which Celery's consumer drops its connection and connects again."""


@dataclass(frozen=True)
class Sample:
    waiting: int  # messages in the worker's queues
    received: int  # tasks this worker process had received by then
    room: bool  # the worker held fewer tasks than its prefetch limit


def looks_stalled(before: Sample | None, now: Sample) -> bool:
    """Messages waited at both checks, the worker could take more at both, and it took none."""
    return (before is not None and before.waiting > 0 and now.waiting > 0
            and before.room and now.room and now.received == before.received)


class ConsumerWatch(bootsteps.StartStopStep):
    """Consumer bootstep (``app.steps["consumer"]``), started once the task consumer exists and
    again after every reconnection."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "consumer watch"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.every = float(settings.CDSS_WORKER_STALL_SECONDS)
        self.tref: Any = None
        self.before: Sample | None = None

    def start(self, c: Any) -> None:
        self.before = None
        if self.every > 0 and c.timer is not None:
            self.tref = c.timer.call_repeatedly(self.every, self.check, (c,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop

    def check(self, c: Any) -> None:
        from cdss.jobs.runner import queue_depths

        consumer = c.task_consumer
        names = {q.name for q in consumer.queues} if consumer is not None else set()
        depths = queue_depths(names) if names else {}
        if depths is None:  # the broker is down: the consumer's own reconnection deals with it
            self.before = None
            return
        limit = c.qos.value if c.qos is not None else 0
        now = Sample(waiting=sum(depths.values()), received=_received[0],
                     room=not limit or len(worker_state.reserved_requests) < limit)
        before, self.before = self.before, now
        if looks_stalled(before, now):
            self.before = None
            log.error("this worker received no task for %.0f s while %s message(s) waited in its queues "
                      "(%s) and it had room for more: connecting to the broker again", self.every,
                      now.waiting, ", ".join(sorted(q for q, n in depths.items() if n)))
            raise ConsumerStalled("the task consumer received nothing while its queues held messages")
