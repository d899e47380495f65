"""HTTP endpoints of the CDS Hooks 2.0.1 service (``/cds-services``) and the card explanation page.

Every error is JSON in the project's one error shape, ``{"error": {"status", "code", "message",
"details"}}``, with a 4xx status naming the problem: 400 malformed JSON or request, 401 token
(with ``WWW-Authenticate``), 404 unknown service or card, 405 method, 412 data missing, 413 body
over ``CDS_HOOKS_MAX_BODY_BYTES`` (5 MiB) or prefetch over 5000 resources, 415 not JSON, 429 over
the client's rate (``CDS_HOOKS_THROTTLE_RATE``, with ``Retry-After``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt

from cdss.audit import audit_record
from cdss.throttling import cds_hooks_wait
from patients.selectors import patient_list_for_user

from .auth import AuthError, Caller, authenticate, base_url
from .catalog import catalog_get, discovery
from .models import IssuedCard
from .prefetch import MAX_RESOURCES
from .services import HookError, feedback_record, hook_call, parse_feedback, parse_request

MAX_BODY_BYTES = 5 * 1024 * 1024
JSON_TYPES = ("application/json", "application/fhir+json")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",  # bearer tokens, no cookies: any origin may call with a valid JWT
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for key, value in {**CORS_HEADERS, **(headers or {})}.items():
        response[key] = value
    response["Cache-Control"] = "no-store"
    return response


def _error(status: int, code: str, message: str, details: list[str] | None = None,
           headers: dict[str, str] | None = None) -> HttpResponse:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details:
        body["details"] = details
    return _json({"error": body}, status=status, headers=headers)


def _max_body() -> int:
    return int(getattr(settings, "CDS_HOOKS_MAX_BODY_BYTES", MAX_BODY_BYTES))


Handler = Callable[..., HttpResponse]


def _endpoint(methods: tuple[str, ...]) -> Callable[[Handler], Handler]:
    """Method check, CORS preflight, JWT authentication, and HookError -> JSON error."""

    def wrap(view: Handler) -> Handler:
        @csrf_exempt
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method == "OPTIONS":
                return _preflight()
            try:  # before anything else: an unauthenticated caller learns nothing, not even the methods
                caller = authenticate(request)
            except AuthError as exc:
                return _error(401, "invalid_token", str(exc),
                              headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc}"'})
            wait = cds_hooks_wait(request, caller.client.pk if caller.client is not None else None)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                return _error(429, "throttled", f"too many requests from this client; retry in {seconds} s",
                              headers={"Retry-After": str(seconds)})
            if request.method not in methods:
                return _error(405, "method_not_allowed", f"use {' or '.join(methods)}",
                              headers={"Allow": ", ".join((*methods, "OPTIONS"))})
            try:
                return view(request, caller, *args, **kwargs)
            except HookError as exc:
                return _error(exc.status, exc.code, exc.message, exc.details)

        inner.__name__ = view.__name__
        inner.__doc__ = view.__doc__
        return inner

    return wrap


def _preflight() -> HttpResponse:
    response = HttpResponse(status=204)
    for key, value in CORS_HEADERS.items():
        response[key] = value
    return response


def _read_json(request: HttpRequest) -> Any:
    content_type = request.content_type or ""
    if content_type not in JSON_TYPES:
        raise HookError(415, "unsupported_media_type",
                        f"send the body as application/json (got {content_type or 'no content type'!r})")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > _max_body():
        raise HookError(413, "too_large", f"the body is {length} bytes; the limit is {_max_body()} bytes "
                        f"(and {MAX_RESOURCES} resources)")
    body = request.read(_max_body() + 1)
    if len(body) > _max_body():
        raise HookError(413, "too_large", f"the body is over the limit of {_max_body()} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HookError(400, "invalid_json", f"the body is not valid JSON ({exc})") from None


@_endpoint(("GET",))
def discovery_view(request: HttpRequest, caller: Caller) -> HttpResponse:
    """GET /cds-services: the services offered."""
    return _json(discovery(catalog_get()))


@_endpoint(("POST",))
def service_view(request: HttpRequest, caller: Caller, service_id: str) -> HttpResponse:
    """POST /cds-services/{id}: the cards for a hook call."""
    hook_request = parse_request(service_id, _read_json(request))
    response = hook_call(hook_request, client=caller.client, base_url=base_url(request))
    return _json(response.body)


@_endpoint(("POST",))
def feedback_view(request: HttpRequest, caller: Caller, service_id: str) -> HttpResponse:
    """POST /cds-services/{id}/feedback: accepted / overridden cards."""
    items = parse_feedback(_read_json(request))
    summary = feedback_record(service_id, items, client=caller.client)
    return _json({"stored": summary.stored, "duplicates": summary.duplicates})


def card_explain(request: HttpRequest, card_uuid: uuid.UUID) -> HttpResponse:
    """The full explanation of an issued card (the card's link): rule, trace, citation. A card
    about a stored patient is shown only to users who may see that patient (404 otherwise)."""
    card = get_object_or_404(IssuedCard.objects.select_related("rule", "rule_version", "patient"), uuid=card_uuid)
    if card.patient_id is not None:
        if not patient_list_for_user(request.user).filter(pk=card.patient_id).exists():
            raise Http404("No such card.")
        audit_record(user=request.user, action="view", target=f"cds-card:{card.uuid}", patient=card.patient,
                     request=request)
    return render(request, "cdshooks/card.html", {"card": card, "version": card.rule_version,
                                                  "feedback": list(card.feedback.all())})
