from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers. Reveals nothing else."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        db_ok = True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        db_ok = False
    return JsonResponse({"status": "ok" if db_ok else "error", "database": db_ok}, status=200 if db_ok else 503)


@never_cache
@require_GET
def health_workers(request: HttpRequest) -> JsonResponse:
    """Workers answering a ping, queue depths and the oldest waiting job: for monitoring.
    Counts only, no names of patients or jobs; 503 when no worker answers while jobs wait."""
    from django.conf import settings
    from django.utils import timezone

    from cdss.models import Job

    oldest = Job.objects.filter(status=Job.Status.QUEUED).order_by("available_at").values_list(
        "available_at", flat=True).first()
    waiting = Job.objects.filter(status=Job.Status.QUEUED).count()
    body: dict[str, object] = {
        "queued_jobs": waiting,
        "oldest_queued_seconds": round((timezone.now() - oldest).total_seconds(), 1) if oldest else 0,
        "running_jobs": Job.objects.filter(status=Job.Status.RUNNING).count(),
        "dead_jobs": Job.objects.filter(status=Job.Status.DEAD).count(),
    }
    if settings.CELERY_TASK_ALWAYS_EAGER:
        body.update(mode="in-process", workers=0, status="ok")
        return JsonResponse(body)
    from cdss.celery import app

    try:
        replies = app.control.ping(timeout=1.0)
        broker_ok = True
    except Exception:  # noqa: BLE001 - broker unreachable
        replies, broker_ok = [], False
    body.update(mode="celery", broker=broker_ok, workers=len(replies))
    healthy = broker_ok and (len(replies) > 0 or waiting == 0)
    body["status"] = "ok" if healthy else "error"
    return JsonResponse(body, status=200 if healthy else 503)


@require_GET
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico on every page without an icon link (the admin's): the icon."""
    from django.templatetags.static import static

    return HttpResponsePermanentRedirect(static("favicon.svg"))
