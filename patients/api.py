"""REST API of the record: one view per operation, querysets scoped to the user."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdss.audit import audit_record

from .fhir.exporter import patient_everything
from .models import Patient, Site
from .selectors import patient_get_for_user, patient_list_for_user, site_list_for_user
from .services import fhir_import_bundle


class PatientOutputSerializer(serializers.ModelSerializer[Patient]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    site: serializers.SlugRelatedField[Site] = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Patient
        fields = ["id", "site", "mrn", "family_name", "given_names", "birth_date", "sex", "deceased", "deceased_at"]


class PatientListApi(ListAPIView[Patient]):
    serializer_class = PatientOutputSerializer

    @extend_schema(parameters=[OpenApiParameter("q", str, description="Name or MRN")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        return patient_list_for_user(self.request.user, query=self.request.query_params.get("q", "")[:100])


class PatientDetailApi(APIView):
    @extend_schema(responses=PatientOutputSerializer)
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            patient = _get_patient(request, external_id)
            audit_record(user=request.user, action="view", target="api:patient", patient=patient, request=request)
        return Response(PatientOutputSerializer(patient).data)


class FhirJsonParser(BaseParser):
    """Keeps the body as bytes: the importer parses it (with orjson) and reports its errors."""

    media_type = "application/fhir+json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.CDSS_FHIR_MAX_UPLOAD_BYTES
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise ParseError(f"The bundle is larger than {limit} bytes.")
        return bytes(data)


class PlainJsonBytesParser(FhirJsonParser):
    media_type = "application/json"


class PatientEverythingApi(APIView):
    """GET /api/patients/{id}/$everything: the record as a FHIR R4 collection Bundle."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            patient = _get_patient(request, external_id)
            bundle = patient_everything(patient)
            audit_record(user=request.user, action="export", target="api:$everything", patient=patient,
                         request=request)
        return Response(bundle, content_type="application/fhir+json")


class FhirBundleImportApi(APIView):
    """POST /api/fhir/?site=CODE with a FHIR R4 Bundle. 200 with counts, or 400 with every error
    and its entry (nothing written)."""

    parser_classes = [FhirJsonParser, PlainJsonBytesParser]

    @extend_schema(request={"application/fhir+json": dict}, responses={200: dict, 400: dict},
                   parameters=[OpenApiParameter("site", str, description="Site code (default: your only site)")])
    def post(self, request: Request) -> Response:
        site = _import_site(request)
        body = request.data
        if not isinstance(body, bytes | bytearray) or not body:
            raise ValidationError({"bundle": ["The request body must be a FHIR Bundle in JSON."]})
        summary = fhir_import_bundle(bytes(body), site=site, user=request.user, request=request)
        data = summary.as_dict()
        if not summary.ok:
            return Response(
                {"error": {"status": 400, "code": "invalid_bundle", "message": "The bundle was not imported; "
                           "nothing was written.", "details": data["errors"]}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response({"site": site.code, "counts": data["counts"], "skipped": data["skipped"]})


def _get_patient(request: Request, external_id: uuid.UUID) -> Patient:
    from django.http import Http404

    try:
        return patient_get_for_user(request.user, external_id)
    except Http404:
        raise NotFound("No such patient.") from None


def _import_site(request: Request) -> Site:
    if not (request.user.is_superuser or request.user.has_perm("patients.add_patient")
            or request.user.groups.filter(name="clinician").exists()):
        raise PermissionDenied("You may not import records.")
    sites = site_list_for_user(request.user)
    code = request.query_params.get("site")
    if code:
        site = sites.filter(code=code).first()
        if site is None:
            raise ValidationError({"site": [f"You are not a member of a site with code {code!r}."]})
        return site
    mine = list(sites[:2])
    if len(mine) != 1:
        raise ValidationError({"site": ["Name the site (?site=CODE): you belong to "
                                        f"{'no site' if not mine else 'several sites'}."]})
    return mine[0]
