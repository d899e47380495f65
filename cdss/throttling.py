"""Request rates: the REST API per authenticated user (scope ``api``; views that import or upload
add ``throttle_scope = "api-import"``), and CDS Hooks per trusted client (scope ``cds-hooks``;
per client address when JWTs are off). Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
(environment: ``CDSS_API_THROTTLE_RATE``, ``CDSS_API_IMPORT_THROTTLE_RATE``,
``CDS_HOOKS_THROTTLE_RATE``), read at each request so a changed setting applies at once. Counters
live in the default cache (``CDSS_CACHE_URL``; shared between processes with Redis).

An API caller over its rate gets 429 in the API's error shape with ``Retry-After``
(``cdss.api_errors``); a CDS Hooks client gets the same shape from ``cdshooks.views``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle


def _rate(scope: str | None) -> str | None:
    rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
    rate = rates.get(scope or "")
    return str(rate) if rate else None


class ApiUserThrottle(SimpleRateThrottle):
    """Every API call of an authenticated user (an anonymous call is refused with 401 before any
    throttle runs: every endpoint needs authentication)."""

    scope = "api"

    def get_rate(self) -> str | None:
        return _rate(self.scope)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class ImportThrottle(ScopedRateThrottle):
    """The stricter scope of the views that set ``throttle_scope`` (imports, uploads)."""

    def get_rate(self) -> str | None:
        return _rate(self.scope)


class CdsHooksThrottle(SimpleRateThrottle):
    """One trusted client's calls (discovery, hooks, feedback), or one address's without a client."""

    scope = "cds-hooks"

    def __init__(self, client_id: int | None) -> None:
        self.client_id = client_id
        super().__init__()

    def get_rate(self) -> str | None:
        return _rate(self.scope)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        ident = f"client-{self.client_id}" if self.client_id is not None else f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def cds_hooks_wait(request: HttpRequest, client_id: int | None) -> float | None:
    """None when the call is within the client's rate, else the seconds to wait."""
    throttle = CdsHooksThrottle(client_id)
    # The throttle reads only the request's META (its address) and no view.
    if throttle.rate is None or throttle.allow_request(request, None):  # type: ignore[arg-type]
        return None
    return throttle.wait() or 1.0
