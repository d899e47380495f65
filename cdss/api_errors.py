"""One error shape for every API error: {"error": {"status", "code", "message", "details"}}.

``exception_handler`` turns DRF's exceptions (and Django's Http404 / PermissionDenied, as DRF
does) into that shape; ``api_not_found`` answers an unknown address under /api/ in the same shape
instead of the HTML 404 page (401 first for an anonymous caller); ``schema_add_error_responses`` is a drf-spectacular postprocessing
hook that documents the shape as the ``Error`` component on every operation's 4xx answers, and
``schema_fhir_operation_paths`` one that puts back the ``$`` of FHIR operations in paths.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler


def error_body(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # DRF's own handler maps these two to NotFound / PermissionDenied but keeps the original
    # exception, whose class has no default_code: map them first so the code is right.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = str(getattr(exc, "default_code", "error"))
    if isinstance(data, dict) and set(data) == {"detail"}:
        detail = data["detail"]
        message, details = str(detail), None
        code = str(getattr(detail, "code", None) or code)
    else:
        message, details = "Invalid request.", data
    response.data = error_body(response.status_code, code, message, details)
    return response


class ApiNotFound(APIView):
    """Any address under /api/ that no endpoint answers, with any method: 401 for an anonymous
    caller (as every endpoint), the JSON 404 otherwise (a page's 404 is HTML; an API's is not)."""

    permission_classes = [IsAuthenticated]
    schema = None  # not an operation of the API

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound("No such endpoint.")

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound("No such endpoint.")


api_not_found = ApiNotFound.as_view()


ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status code."},
                "code": {"type": "string", "description": "A stable machine-readable code, e.g. not_found, "
                                                         "invalid, not_authenticated, permission_denied."},
                "message": {"type": "string", "description": "What went wrong, for a person."},
                "details": {"description": "Per-field problems (validation errors) or a list of problems "
                                           "with their location."},
            },
        }
    },
}
_DESCRIPTIONS = {
    "400": "The request is invalid; details name each problem.",
    "401": "No valid credentials (token or session).",
    "403": "Authenticated, but not allowed to do this.",
    "404": "No such resource, or not one of your sites'.",
    "415": "Unsupported media type.",
    "429": "Too many requests.",
}


def _is_free_form(content: dict[str, Any]) -> bool:
    """A response documented as a bare ``dict`` (an object with no properties)."""
    for media in content.values():
        schema = media.get("schema", {})
        if schema.get("type") == "object" and not schema.get("properties") and "$ref" not in schema:
            return True
    return not content


def schema_add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every operation may answer 401, 403, 404 and 429; those that take a body or query
    parameters 400 (and 415 for a body). All in the Error shape."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            params = operation.get("parameters", [])
            # 404 on every operation: besides path ids, a body or a query may name a patient.
            codes = ["401", "403", "404", "429"]
            if "requestBody" in operation or any(p.get("in") == "query" for p in params):
                codes.append("400")
            if "requestBody" in operation:
                codes.append("415")
            responses = operation["responses"]
            for code in codes:
                existing = responses.get(code)
                if existing is None or _is_free_form(existing.get("content", {})):
                    responses[code] = {
                        "description": (existing or {}).get("description") or _DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
    return result


# FHIR operations are addressed as ``.../$name``; DRF's path simplification drops a ``$`` as if it
# were a regular expression's end anchor, so the schema would name an address that does not exist.
FHIR_OPERATIONS = ("everything",)


def schema_fhir_operation_paths(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    paths = result.get("paths", {})
    fixed: dict[str, Any] = {}
    for path, item in paths.items():
        head, _, last = path.rstrip("/").rpartition("/")
        if last in FHIR_OPERATIONS and head.endswith("}"):
            path = f"{head}/${last}" + ("/" if path.endswith("/") else "")
        fixed[path] = item
    result["paths"] = fixed
    return result
