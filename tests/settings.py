"""Test settings: the project's settings plus a small app of trivial job kinds."""

from cdss.settings import *  # noqa: F403
from cdss.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.jobsapp"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
