"""Celery application.

With ``CELERY_BROKER_URL`` set, jobs go to real workers (``celery -A cdss worker``).
Without it the embedded default runs tasks eagerly, in-process, so the demo needs one process.
"""

import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdss.settings")

app = Celery("cdss")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker whose task consumer went deaf after a reconnection connects again (cdss/jobs/watch.py).
from cdss.jobs.watch import ConsumerWatch  # noqa: E402 - after the app, like its other steps

app.steps["consumer"].add(ConsumerWatch)


class OneLineBeatErrors(logging.Filter):
    """Beat logs each publish that fails while the broker is down with the whole stack and two
    chained tracebacks (about 150 lines, for every schedule entry at every tick of an outage);
    its first line, which names the entry and the broker's error, says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Message Error") and isinstance(record.args, tuple):
            record.msg, record.args = "Message Error: %s", record.args[:1]
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


logging.getLogger("celery.beat").addFilter(OneLineBeatErrors())
