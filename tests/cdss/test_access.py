"""Access: every URL needs a login (except login and health); other sites' patients are 404."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, PathConverter, SlugConverter, StringConverter, UUIDConverter

from cdss.models import AuditEvent

PUBLIC = {"login": 200, "health": 200, "health-workers": 200, "favicon": 301}


def _all_patterns(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    out: list[tuple[str, URLPattern]] = []
    for p in resolver.url_patterns:
        if isinstance(p, URLResolver):
            out.extend(_all_patterns(p, prefix + str(p.pattern)))
        else:
            out.append((prefix + str(p.pattern), p))
    return out


def _concrete(route: str, pattern: URLPattern) -> str | None:
    """A URL that matches ``route``: path converters filled in, simple regexes too."""
    import re

    converters = getattr(pattern.pattern, "converters", {})
    sample = {UUIDConverter: str(uuid.uuid4()), IntConverter: "1", SlugConverter: "x", StringConverter: "x",
              PathConverter: "x"}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[-1]
        conv = converters.get(name)
        return sample.get(type(conv), "1")

    from django.urls.resolvers import RegexPattern

    if isinstance(pattern.pattern, RegexPattern) or "^" in route:
        # admin's regex routes: fill the named groups, drop anchors
        url = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
        url = url.replace("^", "").replace("$", "").replace("\\", "")
    else:
        url = re.sub(r"<([^>]+)>", fill, route)
    if any(ch in url for ch in "()[]?*+|"):
        return None
    return "/" + url.lstrip("/")


def test_every_url_pattern_except_login_and_health_needs_a_logged_in_user(db):
    client = Client()
    checked = 0
    for route, pattern in _all_patterns(get_resolver()):
        url = _concrete(route, pattern)
        if url is None:
            continue
        response = client.get(url)
        if pattern.name in PUBLIC:
            assert response.status_code == PUBLIC[pattern.name], url
            continue
        if response.status_code in (401, 403):
            checked += 1
            continue
        assert response.status_code == 302, (url, response.status_code)
        assert "login" in response["Location"], (url, response["Location"])
        checked += 1
    assert checked > 20  # the admin alone has dozens of routes


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/patients/{id}/", "/api/patients/{id}/", "/api/patients/{id}/$everything"])
def test_a_clinician_of_site_a_gets_404_for_a_patient_of_site_b(client_a, patient_b, path):
    response = client_a.get(path.format(id=patient_b.external_id))
    assert response.status_code == 404
    assert patient_b.family_name not in response.content.decode()
    assert not AuditEvent.objects.filter(patient=patient_b).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/patients/{id}/", "/api/patients/{id}/", "/api/patients/{id}/$everything"])
def test_the_same_endpoints_answer_and_audit_for_my_own_patient(client_a, patient_a, clinician_a, path):
    response = client_a.get(path.format(id=patient_a.external_id), REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    event = AuditEvent.objects.get(patient=patient_a)
    assert event.user == clinician_a and event.ip_address == "10.1.2.3"


@pytest.mark.django_db
def test_the_api_patient_list_is_scoped_to_my_sites(client_a, patient_a, patient_b):
    data = client_a.get("/api/patients/").json()
    ids = {row["id"] for row in data["results"]}
    assert ids == {str(patient_a.external_id)}


@pytest.mark.django_db
def test_api_errors_share_one_shape(client, patient_a):
    response = client.get(f"/api/patients/{patient_a.external_id}/")
    assert response.status_code in (401, 403)
    assert set(response.json()["error"]) >= {"status", "code", "message"}


@pytest.mark.django_db
def test_token_authentication_works_for_the_api(clinician_a, patient_a):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=clinician_a)
    response = Client().get("/api/patients/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200 and response.json()["count"] == 1


@pytest.mark.django_db
def test_post_fhir_bundle_imports_into_my_site_and_rejects_broken_ones(client_a, site_a):
    import orjson

    from patients.models import Observation, Patient
    from tests.patients.fhir_samples import valid_bundle

    ok = client_a.post("/api/fhir/", data=orjson.dumps(valid_bundle()), content_type="application/fhir+json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["counts"]["Patient"] == {"created": 1}
    assert Patient.objects.get().site == site_a

    bad = valid_bundle()
    bad["entry"][2]["resource"]["valueQuantity"] = {"value": 1}
    bad["entry"][0]["resource"]["id"] = bad["entry"][0]["resource"]["id"]
    obs_before = Observation.objects.count()
    response = client_a.post("/api/fhir/", data=orjson.dumps(bad), content_type="application/fhir+json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details[0]["location"] == "entry[2]" and "unit" in details[0]["message"]
    assert Observation.objects.count() == obs_before


@pytest.mark.django_db
def test_post_fhir_refuses_a_site_i_do_not_belong_to(client_a, site_b):
    response = client_a.post("/api/fhir/?site=site-b", data=b"{}", content_type="application/fhir+json")
    assert response.status_code == 400
    assert "not a member" in str(response.json())


def test_sessions_expire_after_30_idle_minutes(settings):
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST is True


@pytest.mark.django_db
def test_an_idle_session_is_logged_out(client_a, patient_a):
    from django.contrib.sessions.models import Session

    assert client_a.get("/").status_code == 200
    Session.objects.update(expire_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    response = client_a.get("/")
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_icon_browsers_ask_for_is_the_static_one(db):
    response = Client().get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


def test_health_is_public_and_says_nothing_about_patients(db):
    response = Client().get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": True}


@pytest.mark.django_db
def test_a_background_poll_does_not_keep_an_idle_session_alive(client_a, patient_a):
    from django.contrib.sessions.models import Session

    client_a.get("/")
    old = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    Session.objects.update(expire_date=old)
    response = client_a.get(f"/patients/{patient_a.external_id}/jobs/", HTTP_X_BACKGROUND_POLL="1",
                            HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Session.objects.get().expire_date == old  # not pushed forward
    client_a.get("/")  # a real request does push it
    assert Session.objects.get().expire_date != old
