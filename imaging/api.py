"""REST API of imaging: ``POST /api/imaging/`` stores images for a patient."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patients.selectors import is_clinician, patient_get_for_user

from .services import ImagingUploadError, UploadFile, imaging_upload


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
        try:
            patient = patient_get_for_user(request.user, values["patient"])
        except Http404:
            raise NotFound("No such patient.") from None
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


def _job_ids(pks: list[int]) -> list[str]:
    from cdss.models import Job

    return [str(x) for x in Job.objects.filter(pk__in=pks).order_by("pk").values_list("external_id", flat=True)]

