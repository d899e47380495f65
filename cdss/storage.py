"""Where uploaded files go (images, previews, thumbnails, heat maps): Django's default storage,
built from the environment by ``settings``.

Unset ``CDSS_S3_BUCKET``: a folder under ``MEDIA_ROOT``. Set: that bucket of an S3-compatible
object store through django-storages' ``S3Storage`` (Amazon S3, MinIO, Ceph RGW...), with
``CDSS_S3_ENDPOINT_URL`` for a store other than Amazon's, ``CDSS_S3_REGION``, ``CDSS_S3_PREFIX``
(a folder inside the bucket) and ``CDSS_S3_ADDRESSING_STYLE`` (``path`` for most self-hosted
stores). Credentials are boto3's own: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a
profile, or an instance role; they never go into settings. Objects are private (no ACL is sent:
the bucket's policy applies) and never served by the store: the views stream them after checking
that the user may see the patient. No Django import here beyond its exception, so settings can
call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

FILESYSTEM = "django.core.files.storage.FileSystemStorage"
S3 = "storages.backends.s3.S3Storage"
ADDRESSING_STYLES = ("auto", "path", "virtual")
_OPTIONAL = (
    ("CDSS_S3_ENDPOINT_URL", "endpoint_url"),
    ("CDSS_S3_REGION", "region_name"),
    ("CDSS_S3_PREFIX", "location"),
    ("CDSS_S3_ADDRESSING_STYLE", "addressing_style"),
)


def media_storage(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``STORAGES["default"]`` entry for these environment variables (see the module's
    docstring); a value that cannot work raises ImproperlyConfigured naming its variable."""
    bucket = environ.get("CDSS_S3_BUCKET", "").strip()
    if not bucket:
        return {"BACKEND": FILESYSTEM}
    if "/" in bucket or not 3 <= len(bucket) <= 63:
        raise ImproperlyConfigured("CDSS_S3_BUCKET must be a bucket name of 3 to 63 characters, without '/' "
                                   "(use CDSS_S3_PREFIX for a folder inside it)")
    options: dict[str, Any] = {
        "bucket_name": bucket,
        "default_acl": None,  # the bucket's policy decides; some S3-compatible stores refuse ACLs
        "querystring_auth": True,
        "file_overwrite": False,  # as the folder storage: a name in use gets a suffix, never overwritten
    }
    for variable, option in _OPTIONAL:
        value = environ.get(variable, "").strip()
        if value:
            options[option] = value
    endpoint = options.get("endpoint_url", "")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"CDSS_S3_ENDPOINT_URL must start with http:// or https://, not {endpoint!r}")
    style = options.get("addressing_style")
    if style is not None and style not in ADDRESSING_STYLES:
        raise ImproperlyConfigured(f"CDSS_S3_ADDRESSING_STYLE must be one of {', '.join(ADDRESSING_STYLES)}, "
                                   f"not {style!r}")
    if "location" in options:
        options["location"] = options["location"].strip("/")
    return {"BACKEND": S3, "OPTIONS": options}
