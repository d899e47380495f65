"""REST API of recommendations: a patient's recommendations, one recommendation with the trace of
why it fired, and a clinician's feedback (accept, override with a coded reason, snooze), written
through ``decision.services`` so that the API, the pages and CDS Hooks feed the same statistics.

Access: a recommendation is seen through its patient (``patients.selectors``), so another site's
is a 404; shadow-mode recommendations are never shown to clinicians (only superusers see them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdss.audit import audit_record
from patients.api import patient_for_api
from patients.selectors import is_clinician, patient_list_for_user

from .models import Recommendation, RecommendationAction, Severity
from .selectors import recommendations_for_patient
from .services import ActionRefused, recommendation_accept, recommendation_override, snooze_create

# A rule hidden for longer than this should be overridden with a reason, so the statistics see it.
SNOOZE_MAX = dt.timedelta(days=90)
COMMENT_MAX_CHARS = 2000


def recommendation_get_for_user(user: Any, external_id: uuid.UUID) -> Recommendation:
    """The recommendation (with its actions) if the user may see its patient and it is not a
    shadow one (superusers see those too); NotFound otherwise. Three queries."""
    qs = Recommendation.objects.filter(external_id=external_id, patient__in=patient_list_for_user(user))
    if not user.is_superuser:
        qs = qs.filter(shadow=False)
    actions = RecommendationAction.objects.select_related("user").order_by("at", "pk")
    rec = (qs.select_related("patient", "rule", "rule_version")
           .prefetch_related(Prefetch("actions", queryset=actions)).first())
    if rec is None:
        raise NotFound("No such recommendation.")
    return rec


class RecommendationOutputSerializer(serializers.ModelSerializer[Recommendation]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    patient = serializers.UUIDField(source="patient.external_id", read_only=True)
    rule = serializers.CharField(source="rule.slug", read_only=True, help_text="The rule's slug.")
    rule_title = serializers.CharField(source="rule.title", read_only=True)
    rule_version = serializers.IntegerField(source="rule_version.number", read_only=True)

    class Meta:
        model = Recommendation
        fields = ["id", "patient", "rule", "rule_title", "rule_version", "status", "severity", "summary", "detail",
                  "first_fired_at", "last_fired_at", "status_changed_at", "closed_at"]


class RecommendationActionOutputSerializer(serializers.ModelSerializer[RecommendationAction]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    user = serializers.SerializerMethodField()

    class Meta:
        model = RecommendationAction
        fields = ["id", "action", "reason_code", "reason_display", "comment", "suggestion", "source", "user", "at"]

    def get_user(self, action: RecommendationAction) -> str:
        return action.user.get_username() if action.user is not None else ""


class RecommendationDetailOutputSerializer(RecommendationOutputSerializer):
    trace = serializers.JSONField(help_text="Each condition of the rule: the fact it used, its value and date, "
                                            "and whether it held.")
    rationale = serializers.CharField(source="rule_version.rationale", read_only=True)
    citation = serializers.CharField(source="rule_version.citation_source", read_only=True)
    citation_url = serializers.CharField(source="rule_version.citation_url", read_only=True)
    suggested_actions = serializers.JSONField(source="rule_version.suggested_actions", read_only=True)
    override_reasons = serializers.JSONField(source="rule_version.override_reasons", read_only=True,
                                             help_text="The coded reasons an override may give (system, code, "
                                                       "display).")
    actions = RecommendationActionOutputSerializer(many=True, read_only=True)

    class Meta(RecommendationOutputSerializer.Meta):
        fields = [*RecommendationOutputSerializer.Meta.fields, "trace", "rationale", "citation", "citation_url",
                  "suggested_actions", "override_reasons", "actions"]


class RecommendationFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(
        choices=[*Recommendation.Status.values, "all"], required=False,
        help_text="Default: the active ones shown to you (not snoozed, your specialty), critical first. "
                  "Otherwise every recommendation with that status (or all), most recent first.")


class PatientRecommendationListApi(ListAPIView[Recommendation]):
    permission_classes = [IsAuthenticated]
    serializer_class = RecommendationOutputSerializer

    @extend_schema(parameters=[RecommendationFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            response = super().list(request, *args, **kwargs)
            audit_record(user=request.user, action="view", target="api:recommendations", patient=self._patient,
                         request=request)
        return response

    def get_queryset(self) -> Any:
        filters = RecommendationFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data.get("status")
        self._patient = patient_for_api(self.request, self.kwargs["external_id"])
        if wanted is None:
            return recommendations_for_patient(self._patient, user=self.request.user)
        qs: QuerySet[Recommendation] = Recommendation.objects.filter(patient=self._patient, shadow=False)
        if wanted != "all":
            qs = qs.filter(status=wanted)
        return qs.select_related("rule", "rule_version").order_by("-last_fired_at", "-pk")

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        # Every row is this patient's: the serializer reads its id without a join.
        for rec in args[0] if args else []:
            rec.patient = self._patient
        return super().get_serializer(*args, **kwargs)


class RecommendationDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=RecommendationDetailOutputSerializer)
    def get(self, request: Request, external_id: uuid.UUID) -> Response:
        with transaction.atomic():
            rec = recommendation_get_for_user(request.user, external_id)
            audit_record(user=request.user, action="view", target="api:recommendation", patient=rec.patient,
                         request=request)
        return Response(_detail(rec))


class FeedbackInputSerializer(serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=["accept", "override", "snooze"])
    reason_code = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                        help_text="override: one of the recommendation's override_reasons codes.")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=COMMENT_MAX_CHARS,
                                    help_text="Required to override a critical recommendation.")
    suggestion = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                       help_text="accept: the suggested action taken, if any.")
    until = serializers.DateTimeField(required=False, help_text="snooze: hide the rule for this patient until "
                                                                "then (in the future, at most 90 days ahead).")


def may_give_feedback(user: Any) -> bool:
    return is_clinician(user, or_perm="decision.add_recommendationaction")


class RecommendationFeedbackApi(APIView):
    """accept, override (with a coded reason; a comment too when critical) or snooze. 201 with the
    recommendation as it is now; 400 naming the input at fault; 409 when it is no longer active."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=FeedbackInputSerializer,
                   responses={201: RecommendationDetailOutputSerializer,
                              409: OpenApiResponse(description="The recommendation is no longer active.")})
    def post(self, request: Request, external_id: uuid.UUID) -> Response:
        if not may_give_feedback(request.user):
            raise PermissionDenied("You may not act on recommendations.")
        rec = recommendation_get_for_user(request.user, external_id)
        serializer = FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        action, comment = data["action"], data.get("comment", "")
        _check_feedback(rec, data)
        try:
            with transaction.atomic():
                if action == "accept":
                    recommendation_accept(rec, user=request.user, suggestion=data.get("suggestion", ""),
                                          comment=comment)
                elif action == "override":
                    recommendation_override(rec, user=request.user, reason_code=data["reason_code"], comment=comment)
                else:
                    snooze_create(patient=rec.patient, rule=rec.rule, until=data["until"], user=request.user,
                                  comment=comment)
                audit_record(user=request.user, action="update", target=f"api:recommendation-{action}",
                             patient=rec.patient, request=request)
        except ActionRefused as exc:
            return Response({"error": {"status": 409, "code": "conflict", "message": str(exc)}},
                            status=status.HTTP_409_CONFLICT)
        rec = recommendation_get_for_user(request.user, external_id)
        return Response(_detail(rec), status=status.HTTP_201_CREATED)


def _check_feedback(rec: Recommendation, data: dict[str, Any]) -> None:
    """The inputs each action needs, checked before anything is written (400 naming the field)."""
    action = data["action"]
    if action == "override":
        codes = [str(r.get("code")) for r in rec.rule_version.override_reasons or [] if isinstance(r, dict)]
        if data.get("reason_code", "") not in codes:
            raise ValidationError({"reason_code": [f"Give one of: {', '.join(codes)}."]})
        if rec.severity == Severity.CRITICAL and not data.get("comment", "").strip():
            raise ValidationError({"comment": ["A comment is required to override a critical recommendation."]})
    elif action == "snooze":
        until = data.get("until")
        now = timezone.now()
        if until is None:
            raise ValidationError({"until": ["A snooze needs an end (until)."]})
        if until <= now or until > now + SNOOZE_MAX:
            raise ValidationError({"until": ["A snooze ends in the future, at most 90 days from now."]})


def _detail(rec: Recommendation) -> Any:
    return RecommendationDetailOutputSerializer(rec).data


