"""Every page and endpoint needs a logged-in user, except the few listed here."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import resolve
from django.urls.exceptions import Resolver404

# URL names reachable without a session. API views authenticate tokens themselves (DRF), so
# they are let through here and refused by DRF's IsAuthenticated default instead.
PUBLIC_URL_NAMES = frozenset({"login", "favicon", "health", "health-workers",
                              # CDS Hooks endpoints authenticate the EHR's JWT themselves (cdshooks.auth).
                              "cds-discovery", "cds-service", "cds-feedback"})
API_PREFIX = "/api/"


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware, except that background polls (job progress panels, marked
    with the header ``X-Background-Poll: 1``) do not push the idle expiry forward: a page left
    open with a polling panel still logs out after the idle timeout."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if (
            session is not None
            and request.headers.get("X-Background-Poll") == "1"
            and not session.modified
            and not session.is_empty()
        ):
            return response
        return super().process_response(request, response)


class LoginRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., HttpResponse], view_args: object, view_kwargs: object
    ) -> HttpResponse | None:
        if request.user.is_authenticated:
            return None
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return None
        if match.url_name in PUBLIC_URL_NAMES:
            return None
        if request.path_info.startswith(API_PREFIX):
            return None  # DRF answers 401/403 with the API's error shape.
        if request.path_info.startswith(f"/{settings.STATIC_URL.strip('/')}/"):
            return None
        if request.headers.get("HX-Request"):
            return JsonResponse({"error": "authentication required"}, status=401)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
