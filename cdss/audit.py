"""Writing the audit log. Call inside the transaction of the read or write it records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .models import AuditEvent

if TYPE_CHECKING:
    from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address. Behind a proxy, set DJANGO_TRUST_X_FORWARDED_FOR to read it."""
    if request is None:
        return None
    from django.conf import settings

    if getattr(settings, "CDSS_TRUST_X_FORWARDED_FOR", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    user: Any,
    action: str,
    target: str,
    patient: Any = None,
    request: HttpRequest | None = None,
    detail: str = "",
) -> AuditEvent:
    return AuditEvent.objects.create(
        user=user if user is not None and getattr(user, "is_authenticated", False) else None,
        patient=patient,
        action=action,
        target=target[:100],
        ip_address=client_ip(request),
        detail=detail[:255],
    )


def audit_record_many(
    *, user: Any, action: str, target: str, patient_ids: Iterable[int], request: HttpRequest | None = None,
    detail: str = "",
) -> None:
    """One row per patient, in one INSERT (imports touch many patients at once)."""
    ip = client_ip(request)
    uid = user.pk if user is not None and getattr(user, "is_authenticated", False) else None
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(user_id=uid, patient_id=pid, action=action, target=target[:100], ip_address=ip,
                       detail=detail[:255])
            for pid in sorted(set(patient_ids))
        ]
    )
