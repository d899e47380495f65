"""The ``--site CODE`` option the import and imaging commands share."""

from __future__ import annotations

from django.core.management.base import CommandError

from patients.models import Site
from patients.services import site_get_default


def site_option(code: str | None) -> Site:
    """The site of that code (a ``CommandError`` naming it where there is none), or without a
    code the default site (``CDSS_DEFAULT_SITE_CODE``, created on first use)."""
    if not code:
        return site_get_default()
    try:
        return Site.objects.get(code=code)
    except Site.DoesNotExist:
        raise CommandError(f"No site with code {code!r}.") from None
