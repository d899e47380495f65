"""One error shape for every API error: {"error": {"status", "code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(data, dict) and set(data) == {"detail"}:
        message, details = str(data["detail"]), None
    else:
        message, details = "Invalid request.", data
    body: dict[str, Any] = {"status": response.status_code, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    response.data = {"error": body}
    return response
