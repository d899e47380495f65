"""REST API of imaging: ``POST /api/imaging/`` stores images for a patient; ``GET
/api/patients/{id}/imaging/`` lists the patient's images with their findings; ``POST
/api/imaging/findings/{id}/feedback/`` records a clinician's verdict on a finding; ``GET
/api/imaging/findings/{id}/heatmap/`` and ``.../result/`` give its heat map (PNG) and its result
as a DICOM Secondary Capture."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdss.audit import audit_record
from patients.api import patient_for_api
from patients.selectors import is_clinician, patient_list_for_user

from .dicomweb import RESPONSE_TYPE, StowRequestError, multipart_parts, stow_store
from .models import ENTERED_IN_ERROR, FindingFeedback, ImagingFinding, ImagingInstance
from .results import ResultFile, ResultUnavailable, finding_report_dicom, finding_result_dicom, private_file
from .selectors import FindingView, finding_views, heatmap_png, imaging_instance_list
from .services import MAX_TOTAL_BYTES, ImagingUploadError, UploadFile, finding_feedback_record, imaging_upload


class ImagingUploadInputSerializer(serializers.Serializer[Any]):
    patient = serializers.UUIDField(help_text="The patient's id (UUID).")
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False,
                                  help_text="DICOM files, zip archives of DICOM files, PNG or JPEG images.")
    modality = serializers.CharField(required=False, allow_blank=True, max_length=16,
                                     help_text="PNG/JPEG only: the modality (e.g. CR, DX, US).")
    body_part = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                      help_text="PNG/JPEG only: the body part (e.g. CHEST, BREAST).")


def may_upload(user: Any) -> bool:
    return is_clinician(user, or_perm="imaging.add_imaginginstance")


class ImagingUploadApi(APIView):
    """Multipart: ``patient`` and one or more ``files``. 201 with the new instances (and those
    already stored), or 400 naming every refused file and why; nothing is stored then."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "api-import"  # cdss.throttling: uploads have the stricter rate

    @extend_schema(request={"multipart/form-data": ImagingUploadInputSerializer}, responses={201: dict, 400: dict})
    def post(self, request: Request) -> Response:
        if not may_upload(request.user):
            raise PermissionDenied("You may not upload images.")
        form: Any = request.data
        data = {"patient": form.get("patient"), "files": request.FILES.getlist("files"),
                "modality": form.get("modality", ""), "body_part": form.get("body_part", "")}
        serializer = ImagingUploadInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        patient = patient_for_api(request, values["patient"])
        files = [UploadFile(f.name or "upload", f.read()) for f in values["files"]]
        try:
            with transaction.atomic():
                result = imaging_upload(patient=patient, files=files, user=request.user, request=request,
                                        modality=values.get("modality", ""), body_part=values.get("body_part", ""),
                                        source="api")
        except ImagingUploadError as exc:
            return Response(
                {"error": {"status": 400, "code": "invalid_upload",
                           "message": "The upload was refused; nothing was stored.",
                           "details": [p.as_dict() for p in exc.problems]}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = result.as_dict()
        body["jobs"] = _job_ids(result.job_ids)
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class OwnTypeApi(APIView):
    """An endpoint whose answer has a media type of its own (a file, DICOM JSON) that the client
    may ask for in its Accept header: errors are the API's JSON whatever that header says
    (negotiation is forced to the API's renderers)."""

    permission_classes = [IsAuthenticated]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


@extend_schema_view(post=extend_schema(
    operation_id="imaging_dicomweb_store",
    request={"multipart/related": OpenApiTypes.BINARY},
    responses={(200, RESPONSE_TYPE): OpenApiTypes.OBJECT, (202, RESPONSE_TYPE): OpenApiTypes.OBJECT,
               (409, RESPONSE_TYPE): OpenApiTypes.OBJECT, 400: OpenApiResponse(description="Not a STOW-RS body."),
               403: OpenApiResponse(description="The user may not upload images."),
               406: OpenApiResponse(description="The client accepts no DICOM JSON."),
               413: OpenApiResponse(description="Larger than the upload limit."),
               415: OpenApiResponse(description='Not multipart/related; type="application/dicom".')},
))
class StowRsApi(OwnTypeApi):
    """DICOMweb STOW-RS (``imaging.dicomweb``): DICOM files as ``multipart/related;
    type="application/dicom"``, each filed to the patient of the user's sites whose MRN is its
    PatientID (or held for a patient not in the record yet, where the user has one site), through
    the upload's checks; ``.../studies/{StudyInstanceUID}`` refuses files of another study. 200:
    every file stored; 202: some refused; 409: none stored; the Store Instances Response as DICOM
    JSON. Errors of the request itself are the API's JSON errors."""

    parser_classes: list[Any] = []  # the body is read as it is
    throttle_scope = "api-import"

    def post(self, request: Request, study_uid: str = "") -> Response:
        if not may_upload(request.user):
            raise PermissionDenied("You may not upload images.")
        accept = request.META.get("HTTP_ACCEPT", "") or "*/*"
        if not any(kind.split(";")[0].strip() in (RESPONSE_TYPE, "application/json", "application/*", "*/*")
                   for kind in accept.split(",")):
            return _stow_error(406, "not_acceptable", f"the response is {RESPONSE_TYPE}; the request accepts none")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_TOTAL_BYTES:
            return _stow_error(413, "too_large", f"the request is larger than {MAX_TOTAL_BYTES} bytes, the limit")
        try:
            parts = multipart_parts(request.META.get("CONTENT_TYPE", ""), request.stream.read() if request.stream else b"")
        except StowRequestError as exc:
            return _stow_error(exc.status, "invalid_stow", str(exc))
        result = stow_store(user=request.user, parts=parts, study_uid=study_uid.strip(), request=request)
        return Response(result.response(), status=result.http_status, content_type=RESPONSE_TYPE)


@extend_schema_view(post=extend_schema(operation_id="imaging_dicomweb_study_store"))
class StowRsStudyApi(StowRsApi):
    """STOW-RS to one study's URL: files of another study are refused (Failure Reason 0xA900)."""


def _stow_error(code: int, name: str, message: str) -> Response:
    return Response({"error": {"status": code, "code": name, "message": message}}, status=code)


def _job_ids(pks: list[int]) -> list[str]:
    from cdss.models import Job

    return [str(x) for x in Job.objects.filter(pk__in=pks).order_by("pk").values_list("external_id", flat=True)]



class ModelVersionBriefSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    version = serializers.CharField()
    architecture = serializers.CharField()
    auc = serializers.FloatField(allow_null=True, help_text="Measured on held-out data (test split, else validation).")
    auc_split = serializers.CharField(help_text="test or validation; empty when none is recorded.")


class VerdictSerializer(serializers.Serializer[Any]):
    verdict = serializers.ChoiceField(choices=FindingFeedback.Verdict.choices)
    comment = serializers.CharField(allow_blank=True)
    at = serializers.DateTimeField()


class FindingOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    label = serializers.CharField()  # type: ignore[assignment]  # a declared field, not Field.label
    probability = serializers.FloatField(help_text="0 to 1.")
    threshold = serializers.FloatField()
    positive = serializers.BooleanField(help_text="Flagged: the probability is at or above the threshold.")
    model = ModelVersionBriefSerializer()
    created_at = serializers.DateTimeField()
    agree = serializers.IntegerField(help_text="Clinicians whose latest verdict agrees.")
    disagree = serializers.IntegerField(help_text="Clinicians whose latest verdict disagrees.")
    mine = VerdictSerializer(allow_null=True, help_text="Your latest verdict.")


def finding_data(view: FindingView) -> dict[str, Any]:
    f, mv = view.finding, view.finding.model_version
    mine = view.mine
    return {
        "id": f.external_id, "label": f.label, "probability": f.probability, "threshold": f.threshold,
        "positive": f.positive, "created_at": f.created_at, "agree": view.agree, "disagree": view.disagree,
        "model": {"name": mv.name, "version": mv.version, "architecture": mv.architecture, "auc": view.auc,
                  "auc_split": view.auc_split},
        "mine": {"verdict": mine.verdict, "comment": mine.comment, "at": mine.created_at} if mine else None,
    }


class StudyBriefSerializer(serializers.Serializer[Any]):
    study_instance_uid = serializers.CharField()
    study_date = serializers.DateField(allow_null=True)
    description = serializers.CharField(allow_blank=True)
    accession_number = serializers.CharField(allow_blank=True)


class SeriesBriefSerializer(serializers.Serializer[Any]):
    series_instance_uid = serializers.CharField()
    modality = serializers.CharField(allow_blank=True)
    body_part = serializers.CharField(allow_blank=True)
    series_number = serializers.IntegerField(allow_null=True)


class InstanceOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    sop_instance_uid = serializers.CharField()
    format = serializers.ChoiceField(choices=ImagingInstance.Format.choices)
    modality = serializers.CharField(allow_blank=True)
    body_part = serializers.CharField(allow_blank=True)
    view_position = serializers.CharField(allow_blank=True)
    laterality = serializers.CharField(allow_blank=True)
    rows = serializers.IntegerField()
    columns = serializers.IntegerField()
    frames = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    study = StudyBriefSerializer()
    series = SeriesBriefSerializer()
    findings = FindingOutputSerializer(many=True, help_text="Per label, the newest model version's first.")


class PatientImagingListApi(ListAPIView[ImagingInstance]):
    """The patient's images, the newest first, each with its study, series and findings (every
    model version's, with the clinicians' verdicts). Audited."""

    permission_classes = [IsAuthenticated]
    serializer_class = InstanceOutputSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        instances = list(page or [])
        views = iter(finding_views([f for i in instances for f in i.findings.all()], request.user))
        rows = []
        for instance in instances:
            series, study = instance.series, instance.series.study
            rows.append({
                "id": instance.external_id, "sop_instance_uid": instance.sop_instance_uid, "format": instance.format,
                "modality": instance.modality, "body_part": instance.body_part,
                "view_position": instance.view_position, "laterality": instance.laterality, "rows": instance.rows,
                "columns": instance.columns, "frames": instance.frames, "created_at": instance.created_at,
                "study": {"study_instance_uid": study.study_instance_uid, "study_date": study.study_date,
                          "description": study.description, "accession_number": study.accession_number},
                "series": {"series_instance_uid": series.series_instance_uid, "modality": series.modality,
                           "body_part": series.body_part, "series_number": series.series_number},
                "findings": [finding_data(next(views)) for _ in instance.findings.all()],
            })
        with transaction.atomic():
            audit_record(user=request.user, action="view", target="api:imaging", patient=self._patient,
                         request=request)
        return self.get_paginated_response(InstanceOutputSerializer(rows, many=True).data)

    def get_queryset(self) -> Any:
        self._patient = patient_for_api(self.request, self.kwargs["external_id"])
        return imaging_instance_list(patient=self._patient)


class FindingFeedbackInputSerializer(serializers.Serializer[Any]):
    verdict = serializers.ChoiceField(choices=FindingFeedback.Verdict.choices)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)


def _finding_for_api(request: Request, finding_id: uuid.UUID) -> ImagingFinding:
    """A finding of one of the user's patients, on an image not entered in error; else 404."""
    finding = (ImagingFinding.objects.select_related("model_version", "patient", "instance__series__study")
               .filter(external_id=finding_id, patient__in=patient_list_for_user(request.user).values("pk"))
               .exclude(instance__status=ENTERED_IN_ERROR).first())
    if finding is None:
        raise NotFound("No such finding.")
    return finding


class FindingFileApi(OwnTypeApi):
    """A file of a finding: the response's body with its own type; errors as JSON."""


_NO_FILE = OpenApiResponse(description="No such finding, or it has no heat map (or its file is gone).")


class FindingHeatmapApi(FindingFileApi):
    """The finding's Grad-CAM heat map: a PNG (palette with transparency) of the image's shape, at
    most 128 px a side, to be stretched over the analysed frame. Audited."""

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY, 404: _NO_FILE})
    def get(self, request: Request, finding_id: uuid.UUID) -> HttpResponse:
        with transaction.atomic():
            finding = _finding_for_api(request, finding_id)
            if not finding.heatmap:
                raise NotFound("This finding has no heat map.")
            try:
                data = heatmap_png(finding)
            except (OSError, ValueError):
                raise NotFound("This finding's heat map could not be read from storage.") from None
            audit_record(user=request.user, action="view", target="api:imaging-heatmap", patient=finding.patient,
                         request=request, detail=f"finding {finding.external_id}")
        return private_file(data, "image/png")


class FindingDicomApi(FindingFileApi):
    """A finding as a DICOM object made by ``build``; audited as an export under ``target``."""

    build: Callable[[ImagingFinding], ResultFile]  # a staticmethod
    target: str

    def get(self, request: Request, finding_id: uuid.UUID) -> HttpResponse:
        with transaction.atomic():
            finding = _finding_for_api(request, finding_id)
            try:
                result = self.build(finding)
            except ResultUnavailable as exc:
                raise NotFound(str(exc)) from None
            audit_record(user=request.user, action="export", target=self.target, patient=finding.patient,
                         request=request, detail=f"finding {finding.external_id} as DICOM {result.sop_instance_uid}")
        return private_file(result.data, "application/dicom", result.name)


@extend_schema_view(get=extend_schema(responses={(200, "application/dicom"): OpenApiTypes.BINARY, 404: _NO_FILE}))
class FindingResultApi(FindingDicomApi):
    """The finding as a DICOM Secondary Capture for a PACS (the analysed frame with the heat map
    blended over it and a caption: label, probability, threshold, model and version, measured AUC,
    "not a diagnosis"), in the image's study; the same finding always has the same UIDs. Audited as
    an export."""

    build = staticmethod(finding_result_dicom)
    target = "api:imaging-result"


@extend_schema_view(get=extend_schema(responses={
    (200, "application/dicom"): OpenApiTypes.BINARY,
    404: OpenApiResponse(description="No such finding, or its image is no DICOM instance or was entered in error.")}))
class FindingReportApi(FindingDicomApi):
    """The finding as a DICOM Structured Report (Enhanced SR, an Imaging Measurement Report, TID
    1500): the source image (and frame), the algorithm (model, version, architecture, threshold,
    measured AUC), the finding coded (SNOMED CT where known) as present or absent, the probability
    and the threshold as measurements. For DICOM images only; the same finding always has the same
    UIDs. Audited as an export."""

    build = staticmethod(finding_report_dicom)
    target = "api:imaging-report"


class FindingFeedbackApi(APIView):
    """A clinician's verdict on a finding (agree or disagree, with an optional comment), as in the
    imaging viewer: append-only (a new verdict replaces the user's earlier one in the counts),
    audited, and the patient's rules evaluated again. 201 with the finding as it is now."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=FindingFeedbackInputSerializer,
                   responses={201: FindingOutputSerializer, 404: OpenApiResponse(description="No such finding.")})
    def post(self, request: Request, finding_id: uuid.UUID) -> Response:
        finding = _finding_for_api(request, finding_id)
        serializer = FindingFeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            finding_feedback_record(finding=finding, patient=finding.patient, user=request.user,
                                    verdict=data["verdict"], comment=data.get("comment", ""), request=request)
        [view] = finding_views([finding], request.user)
        return Response(FindingOutputSerializer(finding_data(view)).data, status=status.HTTP_201_CREATED)
