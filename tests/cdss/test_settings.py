"""Settings come from the environment; production refuses unsafe defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_secret_key_is_required_when_debug_is_off():
    result = run_manage("check", DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_settings_pass_check_deploy_without_warnings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_DEBUG="false",
                        DJANGO_SECRET_KEY="x" * 20 + "a-long-random-production-key-0123456789",
                        DJANGO_ALLOWED_HOSTS="cdss.example.org")
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_nothing_set_the_app_uses_sqlite_and_in_process_jobs():
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='cdss.settings'; django.setup(); "
            "from django.conf import settings as s; "
            "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER)")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["django.db.backends.sqlite3", "True"]


def test_database_url_and_broker_switch_to_postgresql_and_redis():
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='cdss.settings'; django.setup(); "
            "from django.conf import settings as s; "
            "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CELERY_TASK_ALWAYS_EAGER)")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    env = {**base, "DATABASE_URL": "postgres://u@db.example:5432/cdss_x", "CELERY_BROKER_URL": "redis://r:6379/0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["django.db.backends.postgresql", "cdss_x", "False"]
