"""``manage.py check --deploy`` warns when CDS Hooks calls are not authenticated."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def cds_hooks_jwt_check(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if getattr(settings, "CDS_HOOKS_REQUIRE_JWT", True):
        return []
    return [Warning(
        "CDS_HOOKS_REQUIRE_JWT is false: /cds-services accepts calls without a client JWT.",
        hint="Unset CDS_HOOKS_REQUIRE_JWT (it is for local testing only) and register each EHR as a trusted "
             "client with its JWKS in the admin.",
        id="cdshooks.W001",
    )]
