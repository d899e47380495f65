"""REST API of jobs: a user sees the jobs of the patients of their sites (population jobs, which
belong to no patient, only staff see); staff may retry a dead, failed or cancelled job; a
clinician may ask for a fresh per-patient analysis, as the patient page's job panel does."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patients.selectors import is_clinician, patient_get_for_user, patient_list_for_user

from .audit import audit_record
from .jobs import runner
from .models import Job
from .selectors import job_kind_list_per_patient
from .views_jobs import error_first_line

JOB_API_FIELDS = ("external_id", "kind", "queue", "status", "attempts", "max_attempts", "progress",
                  "progress_message", "error", "created_at", "started_at", "finished_at", "patient__external_id")


def job_list_for_user(user: Any) -> QuerySet[Job]:
    """Jobs the user may see: those of the patients they may see (``patient_list_for_user``: their
    sites' and their break-glass patients'); staff also see population jobs; a superuser sees all."""
    if not getattr(user, "is_authenticated", False):
        return Job.objects.none()
    qs = Job.objects.select_related("patient").only(*JOB_API_FIELDS)
    if user.is_superuser:
        return qs
    mine = Q(patient__in=patient_list_for_user(user).values("pk"))
    if user.is_staff:
        mine |= Q(patient__isnull=True)
    return qs.filter(mine)


def job_get_for_user(user: Any, external_id: uuid.UUID) -> Job:
    job = job_list_for_user(user).filter(external_id=external_id).first()
    if job is None:
        raise NotFound("No such job.")
    return job


class JobOutputSerializer(serializers.ModelSerializer[Job]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    patient = serializers.SerializerMethodField(help_text="The patient's id, or null for a population job.")
    error = serializers.SerializerMethodField(help_text="The first line of the last error (the full text is for "
                                                        "operators, in the admin).")
    finished = serializers.BooleanField(source="is_finished", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "kind", "queue", "status", "finished", "patient", "attempts", "max_attempts", "progress",
                  "progress_message", "error", "created_at", "started_at", "finished_at"]

    def get_patient(self, job: Job) -> uuid.UUID | None:
        return job.patient.external_id if job.patient is not None else None

    def get_error(self, job: Job) -> str:
        return error_first_line(job.error)


class JobFilterSerializer(serializers.Serializer[Any]):
    patient = serializers.UUIDField(required=False, help_text="Only this patient's jobs.")
    status = serializers.ChoiceField(choices=Job.Status.choices, required=False)
    kind = serializers.CharField(required=False, max_length=64)


class JobListApi(ListAPIView[Job]):
    """Newest first."""

    permission_classes = [IsAuthenticated]
    serializer_class = JobOutputSerializer

    @extend_schema(parameters=[JobFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Job]:
        filters = JobFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        values = filters.validated_data
        qs = job_list_for_user(self.request.user)
        if values.get("patient"):
            qs = qs.filter(patient__external_id=values["patient"])
        if values.get("status"):
            qs = qs.filter(status=values["status"])
        if values.get("kind"):
            qs = qs.filter(kind=values["kind"])
        return qs.order_by("-created_at", "-pk")


class JobDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=JobOutputSerializer)
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        return Response(JobOutputSerializer(job_get_for_user(request.user, external_id)).data)


class JobRetryApi(APIView):
    """Staff only: a dead, failed or cancelled job gets a fresh set of attempts; 409 otherwise."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={200: JobOutputSerializer,
                                            409: OpenApiResponse(description="The job is not dead, failed or "
                                                                             "cancelled.")})
    def post(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            job = job_get_for_user(request.user, external_id)
            if not runner.job_retry(job):
                return Response(
                    {"error": {"status": 409, "code": "conflict",
                               "message": f"The job is {job.status}; only a dead, failed or cancelled job is retried."}},
                    status=status.HTTP_409_CONFLICT,
                )
            if job.patient is not None:
                audit_record(user=request.user, action="update", target=f"job:{job.kind}", patient=job.patient,
                             request=request)
        return Response(JobOutputSerializer(job_get_for_user(request.user, external_id)).data)


class JobCreateInputSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField(max_length=64, help_text="A per-patient job kind (see the job panel).")


def may_request_jobs(user: Any) -> bool:
    return is_clinician(user, or_perm="cdss.add_job")


class PatientJobCreateApi(APIView):
    """A fresh analysis of one kind for one patient; 201 with the queued job."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=JobCreateInputSerializer, responses={201: JobOutputSerializer})
    def post(self, request: Request, external_id: uuid.UUID) -> Response:
        if not may_request_jobs(request.user):
            raise PermissionDenied("You may not request analyses.")
        try:
            patient = patient_get_for_user(request.user, external_id)
        except Http404:
            raise NotFound("No such patient.") from None
        serializer = JobCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        kind = serializer.validated_data["kind"]
        allowed = sorted(k.name for k in job_kind_list_per_patient())
        if kind not in allowed:
            raise ValidationError({"kind": [f"Not a per-patient job kind; one of: {', '.join(allowed) or 'none'}."]})
        with transaction.atomic():
            # The time makes each request a new job (see views_jobs): asking again means a fresh run.
            job = runner.job_enqueue(kind=kind, patient=patient, user=request.user,
                                     inputs={"requested_at": timezone.now().isoformat()})
            audit_record(user=request.user, action="create", target=f"job:{kind}", patient=patient, request=request)
        job.patient = patient
        return Response(JobOutputSerializer(job).data, status=status.HTTP_201_CREATED)
