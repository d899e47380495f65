"""REST API of the record: one view per operation, querysets scoped to the user."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Length
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdss.audit import audit_record

from .fhir.exporter import patient_everything
from .models import (
    ACTIVE_CONDITION,
    ENTERED_IN_ERROR,
    AllergyIntolerance,
    ClinicalNote,
    Condition,
    MedicationRequest,
    Observation,
    Patient,
    Site,
)
from .selectors import patient_get_for_user, patient_list_for_user, site_list_for_user
from .services import fhir_import_bundle


class PatientOutputSerializer(serializers.ModelSerializer[Patient]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    site: serializers.SlugRelatedField[Site] = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Patient
        fields = ["id", "site", "mrn", "family_name", "given_names", "birth_date", "sex", "deceased", "deceased_at"]


class PatientListApi(ListAPIView[Patient]):
    permission_classes = [IsAuthenticated]
    serializer_class = PatientOutputSerializer

    @extend_schema(parameters=[OpenApiParameter("q", str, description="Name or MRN")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        return patient_list_for_user(self.request.user, query=self.request.query_params.get("q", "")[:100])


class PatientDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=PatientOutputSerializer)
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            patient = patient_for_api(request, external_id)
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

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, "application/fhir+json"): OpenApiTypes.OBJECT})
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            patient = patient_for_api(request, external_id)
            bundle = patient_everything(patient)
            audit_record(user=request.user, action="export", target="api:$everything", patient=patient,
                         request=request)
        return Response(bundle, content_type="application/fhir+json")


class FhirImportOutputSerializer(serializers.Serializer[Any]):
    site = serializers.CharField()
    counts = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()),
                                   help_text="Per model: rows created, updated and unchanged.")
    skipped = serializers.DictField(child=serializers.IntegerField(), help_text="Entries not imported, by reason.")


class FhirBundleImportApi(APIView):
    """POST /api/fhir/?site=CODE with a FHIR R4 Bundle. 200 with counts, or 400 with every error
    and its entry (nothing written)."""

    permission_classes = [IsAuthenticated]
    parser_classes = [FhirJsonParser, PlainJsonBytesParser]
    throttle_scope = "api-import"  # cdss.throttling: bulk writes have the stricter rate

    @extend_schema(request={"application/fhir+json": OpenApiTypes.OBJECT, "application/json": OpenApiTypes.OBJECT},
                   responses={200: FhirImportOutputSerializer,
                              400: OpenApiResponse(description="Every error of the bundle with its entry; "
                                                               "nothing was written.")},
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


# --------------------------------------------------------------------------------------------
# The record, read-only: one list per kind of fact, scoped through the patient's site, paginated,
# entered-in-error rows left out, one audit row per call, a fixed number of queries per page.


class ConditionOutputSerializer(serializers.ModelSerializer[Condition]):
    id = serializers.UUIDField(source="external_id", read_only=True)

    class Meta:
        model = Condition
        fields = ["id", "status", "clinical_status", "category", "code_system", "code", "display", "onset_at",
                  "abatement_at", "recorded_at"]


class ObservationOutputSerializer(serializers.ModelSerializer[Observation]):
    id = serializers.UUIDField(source="external_id", read_only=True)

    class Meta:
        model = Observation
        fields = ["id", "status", "category", "code_system", "code", "display", "value_quantity", "value_unit",
                  "value_comparator", "value_code_system", "value_code", "value_display", "value_string",
                  "effective_at", "issued_at"]


class MedicationOutputSerializer(serializers.ModelSerializer[MedicationRequest]):
    id = serializers.UUIDField(source="external_id", read_only=True)

    class Meta:
        model = MedicationRequest
        fields = ["id", "status", "intent", "code_system", "code", "display", "dosage_text", "authored_at",
                  "period_start", "period_end"]


class AllergyOutputSerializer(serializers.ModelSerializer[AllergyIntolerance]):
    id = serializers.UUIDField(source="external_id", read_only=True)

    class Meta:
        model = AllergyIntolerance
        fields = ["id", "status", "clinical_status", "allergy_type", "category", "criticality", "code_system", "code",
                  "display", "reaction", "onset_at", "recorded_at"]


class NoteListOutputSerializer(serializers.ModelSerializer[ClinicalNote]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    characters = serializers.IntegerField(read_only=True, help_text="Length of the text.")

    class Meta:
        model = ClinicalNote
        fields = ["id", "status", "source_type", "code_system", "code", "display", "author_display", "written_at",
                  "content_type", "characters"]


class NoteDetailOutputSerializer(NoteListOutputSerializer):
    class Meta(NoteListOutputSerializer.Meta):
        fields = [*NoteListOutputSerializer.Meta.fields, "text"]


class PatientRecordListApi(ListAPIView[Any]):
    """Base of the record lists: the patient comes from ``patient_get_for_user`` (another site's
    patient is a 404), and the call is audited once, whatever the page."""

    permission_classes = [IsAuthenticated]
    audit_target = ""

    def patient(self) -> Patient:
        if not hasattr(self, "_patient"):
            self._patient = patient_for_api(self.request, self.kwargs["external_id"])
        return self._patient

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            response = super().list(request, *args, **kwargs)
            audit_record(user=request.user, action="view", target=self.audit_target, patient=self.patient(),
                         request=request)
        return response

    def facts(self, model: Any) -> QuerySet[Any]:
        return model.objects.filter(patient=self.patient()).exclude(status=ENTERED_IN_ERROR)


class ConditionFilterSerializer(serializers.Serializer[Any]):
    active = serializers.BooleanField(required=False, allow_null=True, default=None,
                                      help_text="true: only active, recurrent or relapsed conditions.")


class PatientConditionListApi(PatientRecordListApi):
    serializer_class = ConditionOutputSerializer
    audit_target = "api:conditions"

    @extend_schema(parameters=[ConditionFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Condition]:
        filters = _filters(ConditionFilterSerializer, self.request)
        qs = self.facts(Condition)
        if filters.get("active"):
            qs = qs.filter(ACTIVE_CONDITION)
        return qs.order_by("-onset_at", "-pk")


class ObservationFilterSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(required=False, max_length=500,
                                 help_text="One code or several separated by commas (LOINC in Synthea).")
    category = serializers.CharField(required=False, max_length=64, help_text="e.g. laboratory, vital-signs.")
    date_from = serializers.DateField(required=False, help_text="Effective on or after this day (YYYY-MM-DD).")
    date_to = serializers.DateField(required=False, help_text="Effective on or before this day (YYYY-MM-DD).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise ValidationError({"date_to": ["date_to is before date_from."]})
        return attrs


class PatientObservationListApi(PatientRecordListApi):
    """Newest first; filter by code(s), category and a range of days (UTC)."""

    serializer_class = ObservationOutputSerializer
    audit_target = "api:observations"

    @extend_schema(parameters=[ObservationFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Observation]:
        filters = _filters(ObservationFilterSerializer, self.request)
        qs = self.facts(Observation)
        codes = [c.strip() for c in filters.get("code", "").split(",") if c.strip()]
        if codes:
            qs = qs.filter(code__in=codes)
        if filters.get("category"):
            qs = qs.filter(category=filters["category"])
        if filters.get("date_from"):
            qs = qs.filter(effective_at__gte=_day_start(filters["date_from"]))
        if filters.get("date_to"):
            qs = qs.filter(effective_at__lt=_day_start(filters["date_to"]) + dt.timedelta(days=1))
        return qs.order_by("-effective_at", "-pk")


class MedicationFilterSerializer(serializers.Serializer[Any]):
    status = serializers.CharField(required=False, max_length=32, help_text="FHIR status, e.g. active, stopped.")


class PatientMedicationListApi(PatientRecordListApi):
    serializer_class = MedicationOutputSerializer
    audit_target = "api:medications"

    @extend_schema(parameters=[MedicationFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[MedicationRequest]:
        filters = _filters(MedicationFilterSerializer, self.request)
        qs = self.facts(MedicationRequest)
        if filters.get("status"):
            qs = qs.filter(status=filters["status"])
        return qs.order_by("-authored_at", "-pk")


class PatientAllergyListApi(PatientRecordListApi):
    serializer_class = AllergyOutputSerializer
    audit_target = "api:allergies"

    def get_queryset(self) -> QuerySet[AllergyIntolerance]:
        return self.facts(AllergyIntolerance).order_by("display", "pk")


class PatientNoteListApi(PatientRecordListApi):
    """Newest first, without the text (GET the note for it)."""

    serializer_class = NoteListOutputSerializer
    audit_target = "api:notes"

    def get_queryset(self) -> QuerySet[ClinicalNote]:
        return (self.facts(ClinicalNote).defer("text", "raw").annotate(characters=Length("text"))
                .order_by("-written_at", "-pk"))


class PatientNoteDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=NoteDetailOutputSerializer)
    def get(self, request: Request, external_id: uuid.UUID, note_id: uuid.UUID) -> Response:
        with transaction.atomic():
            patient = patient_for_api(request, external_id)
            note = (ClinicalNote.objects.filter(patient=patient, external_id=note_id).exclude(status=ENTERED_IN_ERROR)
                    .defer("raw").annotate(characters=Length("text")).first())
            if note is None:
                raise NotFound("No such note.")
            audit_record(user=request.user, action="view", target="api:note", patient=patient, request=request)
        return Response(NoteDetailOutputSerializer(note).data)


def _filters(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    """The query parameters, checked: 400 naming each bad one."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def patient_for_api(request: Request, external_id: uuid.UUID | str) -> Patient:
    """The patient if the caller may see it; the API's 404 ("No such patient.") otherwise, for
    another site's patient as for an unknown one (every app's API asks through this)."""
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
