"""Settings, read from the environment.

With nothing set the app runs on the embedded default: SQLite under ``var/`` and jobs run
in-process. Every variable is documented in README.md ("Configuration").
"""

import os
from pathlib import Path

import environ
import plotly
from django.core.exceptions import ImproperlyConfigured

from cdss.storage import media_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG: bool = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY: str = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    # Development and demo only; production refuses to start without a real key.
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cdss",
    "patients",
    "imaging",
    "risk",
    "nlp",
    "decision",
    "cdshooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "cdss.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "cdss.middleware.LoginRequiredMiddleware",
]

if not DEBUG:
    # Static files from the web process in production (runserver serves them in development).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "cdss.urls"
WSGI_APPLICATION = "cdss.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL is set (postgres://user@host:port/name).
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'cdss.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves the patient page and its panels from several threads at once,
    # each panel reading and then writing its audit row in one transaction. A deferred SQLite
    # transaction that reads and then writes while another connection writes fails at once with
    # "database is locked" (no wait); an IMMEDIATE one takes the write lock at BEGIN and waits up
    # to the timeout. WAL lets readers go on while one connection writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    })
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "worklist"
LOGOUT_REDIRECT_URL = "login"

# Sessions expire after 30 idle minutes: every request pushes the expiry forward.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_SECONDS", default=30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# Plotly's own bundle is served from the installed package (no CDN, nothing vendored twice).
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/plotly", Path(plotly.__file__).parent / "package_data"),
]
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "media/"

# Production hardening (checked by `manage.py check --deploy`).
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Uploaded files: a folder under MEDIA_ROOT, or an S3-compatible bucket with CDSS_S3_BUCKET set
# (cdss/storage.py). Static files: hashed and compressed when debug is off.
STORAGES = {
    "default": media_storage(os.environ),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that an anonymous call is answered 401 with WWW-Authenticate.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cdss.api_errors.exception_handler",
    # Request rates (cdss/throttling.py), per authenticated user for the API and per trusted client
    # (else per address) for CDS Hooks: "N/second|minute|hour|day"; empty turns a limit off.
    "DEFAULT_THROTTLE_CLASSES": ["cdss.throttling.ApiUserThrottle", "cdss.throttling.ImportThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api": env.str("CDSS_API_THROTTLE_RATE", default="600/minute") or None,
        "api-import": env.str("CDSS_API_IMPORT_THROTTLE_RATE", default="60/minute") or None,
        "cds-hooks": env.str("CDS_HOOKS_THROTTLE_RATE", default="6000/minute") or None,
    },
}
# The cache holds the throttles' counters: per process by default; set CDSS_CACHE_URL (e.g.
# redis://127.0.0.1:6379/1) so that every server process shares them.
CACHES = {"default": env.cache("CDSS_CACHE_URL", default="locmemcache://")}
SPECTACULAR_SETTINGS = {
    "TITLE": "CDSS API",
    "DESCRIPTION": (
        "Clinical decision support: patient records, FHIR R4 import/export, notes, imaging uploads, "
        "jobs and their status, risk results, recommendations and feedback. Authenticate with a token "
        "(`Authorization: Token <key>`; `manage.py drf_create_token USERNAME` issues one) or a session. "
        "Every error has one shape: `{\"error\": {\"status\", \"code\", \"message\", \"details\"}}`."
    ),
    "VERSION": "0.2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "cdss.models.Job.Status",
        "RecommendationStatusEnum": "decision.models.Recommendation.Status",
        "RiskAssessmentStatusEnum": "risk.models.RiskAssessment.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cdss.api_errors.schema_add_error_responses",
        "cdss.api_errors.schema_fhir_operation_paths",
    ],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI assets from the installed sidecar package (no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Jobs: Redis broker when configured; otherwise in-process (the embedded default).
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers keep their database connection across tasks (Celery's Django fixup otherwise closes it
# after every task, which costs a new PostgreSQL backend per job); CONN_MAX_AGE and health checks
# still recycle it.
CELERY_DB_REUSE_MAX: int = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Redis re-delivers an unacknowledged message after this long; the reaper re-queues a dead
# worker's job far sooner (after its lease), and the conditional claim makes re-delivery harmless.
# A publish while the broker is down fails within ~50 ms instead of retrying for seconds inside
# a web request: the job row is already stored and the relay publishes it when Redis is back.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TASK_ROUTES = {
    "cdss.reap_expired_jobs": {"queue": "default"},
    "cdss.publish_pending_jobs": {"queue": "default"},
}
CELERY_BEAT_SCHEDULE = {
    "reap-expired-jobs": {"task": "cdss.reap_expired_jobs", "schedule": env.float("CDSS_JOB_REAP_EVERY", default=15.0)},
    "publish-pending-jobs": {
        "task": "cdss.publish_pending_jobs",
        "schedule": env.float("CDSS_JOB_RELAY_EVERY", default=5.0),
    },
}

# Job platform (cdss.jobs).
CDSS_JOB_LEASE_SECONDS: int = env.int("CDSS_JOB_LEASE_SECONDS", default=60)
CDSS_JOB_MAX_ATTEMPTS: int = env.int("CDSS_JOB_MAX_ATTEMPTS", default=3)
CDSS_JOB_RETRY_BACKOFF_SECONDS: int = env.int("CDSS_JOB_RETRY_BACKOFF_SECONDS", default=10)
# A queued job whose message has not started after this long is published again if its queue
# is empty (the broker lost it).
CDSS_JOB_REPUBLISH_SECONDS: int = env.int("CDSS_JOB_REPUBLISH_SECONDS", default=30)
# Every this many seconds a worker checks that it still receives tasks while messages wait in its
# queues, and connects to the broker again when it does not (cdss/jobs/watch.py); 0 turns it off.
CDSS_WORKER_STALL_SECONDS: float = env.float("CDSS_WORKER_STALL_SECONDS", default=60.0)

# Project settings.
CDSS_DATA_DIR = env.path("CDSS_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "data"))
# Trained model files; the registry (cdss.ModelVersion) stores paths relative to this folder.
CDSS_MODEL_DIR = env.path("CDSS_MODEL_DIR", default=str(VAR_DIR / "models"))
CDSS_DEFAULT_SITE_CODE: str = env.str("CDSS_DEFAULT_SITE_CODE", default="main")
# How long a clinician's emergency (break-glass) access to another site's patient lasts.
CDSS_BREAK_GLASS_HOURS: float = env.float("CDSS_BREAK_GLASS_HOURS", default=8.0)
# Read the client address from X-Forwarded-For (only behind a trusted proxy).
CDSS_TRUST_X_FORWARDED_FOR: bool = env.bool("DJANGO_TRUST_X_FORWARDED_FOR", default=False)
# Largest FHIR bundle accepted over HTTP (bytes).
CDSS_FHIR_MAX_UPLOAD_BYTES: int = env.int("CDSS_FHIR_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
# Worker processes that decode images and encode heat map PNGs for the imaging job (0: threads of
# the worker process itself). On a GPU host, processes share no GIL with the thread that feeds the
# GPU; started once per worker process, spawned, never given patient data beyond the files they
# decode. See imaging/README.md.
CDSS_IMAGING_PROCESSES: int = env.int("CDSS_IMAGING_PROCESSES", default=0)
# On a CUDA device the imaging model's forward pass (with Grad-CAM) is captured as one CUDA graph per
# batch shape and replayed (one launch instead of hundreds); false keeps it eager.
CDSS_IMAGING_CUDA_GRAPHS: bool = env.bool("CDSS_IMAGING_CUDA_GRAPHS", default=True)
# Bytes of stored image files each web process keeps in memory for the viewer's renderings (other
# frames, windows, full size), so that scrolling through a multi-frame file reads it from storage
# once, not once a frame (from an object store: one GET per frame). 0 turns it off.
CDSS_IMAGING_RENDER_CACHE_BYTES: int = env.int("CDSS_IMAGING_RENDER_CACHE_BYTES", default=256 * 1024 * 1024)
# The PACS that findings' DICOM results (heat map over the image, with the model's figures) are
# sent to by C-STORE: dicom://CALLED_AE@host:port (empty: none; imaging/pacs.py). CDSS_PACS_SEND:
# what goes after each imaging job by itself: off (only what a clinician sends), flagged or all.
CDSS_PACS_URL: str = env.str("CDSS_PACS_URL", default="")
CDSS_PACS_CALLING_AE: str = env.str("CDSS_PACS_CALLING_AE", default="CDSS")
CDSS_PACS_SEND: str = env.str("CDSS_PACS_SEND", default="off")
# Which objects each finding is sent as: sc (Secondary Capture), sr (Structured Report) or sc,sr.
CDSS_PACS_OBJECTS: str = env.str("CDSS_PACS_OBJECTS", default="sc")
CDSS_PACS_TIMEOUT_SECONDS: float = env.float("CDSS_PACS_TIMEOUT_SECONDS", default=30.0)
# DICOM over TLS to the PACS: the CA certificates to trust it by (set: TLS), and this system's own
# certificate and key where the PACS asks for one.
CDSS_PACS_TLS_CA: str = env.str("CDSS_PACS_TLS_CA", default="")
CDSS_PACS_TLS_CERT: str = env.str("CDSS_PACS_TLS_CERT", default="")
CDSS_PACS_TLS_KEY: str = env.str("CDSS_PACS_TLS_KEY", default="")
# Images the DICOM listener receives for a PatientID no patient of its site has yet are held
# (imaging/held.py): filed by the sweep once a patient with that MRN exists, discarded after this
# many days if none does. The sweep runs every CDSS_IMAGING_SWEEP_EVERY seconds (beat); it also
# queues the analysis of images a receiver stored and did not live to queue (imaging/services.py).
CDSS_IMAGING_HOLD_DAYS: int = env.int("CDSS_IMAGING_HOLD_DAYS", default=30)
CDSS_IMAGING_SWEEP_EVERY: float = env.float("CDSS_IMAGING_SWEEP_EVERY", default=60.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = CDSS_FHIR_MAX_UPLOAD_BYTES
# CDS Hooks (cdshooks/): JWT authentication of EHR clients; false only for local testing
# (`check --deploy` warns). The base URL, when set, is what tokens' `aud` and card links use.
CDS_HOOKS_REQUIRE_JWT: bool = env.bool("CDS_HOOKS_REQUIRE_JWT", default=True)
CDS_HOOKS_BASE_URL: str = env.str("CDS_HOOKS_BASE_URL", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}
