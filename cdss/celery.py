"""Celery application.

With ``CELERY_BROKER_URL`` set, jobs go to real workers (``celery -A cdss worker``).
Without it the embedded default runs tasks eagerly, in-process, so the demo needs one process.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdss.settings")

app = Celery("cdss")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker whose task consumer went deaf after a reconnection connects again (cdss/jobs/watch.py).
from cdss.jobs.watch import ConsumerWatch  # noqa: E402 - after the app, like its other steps

app.steps["consumer"].add(ConsumerWatch)
