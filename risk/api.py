"""REST API of risk: the calculators (``GET /api/risk/calculators/``, ``POST
/api/risk/calculate/{name}/``, nothing stored) and a patient's current results (``GET
/api/patients/{id}/risk/``: the latest assessment per calculator, with its contributions)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdss.audit import audit_record
from patients.api import patient_for_api
from risk.calculators import CalculatorInputError, UnknownCalculator, all_calculators, get

from .models import RiskAssessment
from .selectors import risk_assessment_latest_list


class CalculatorOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    title = serializers.CharField()
    version = serializers.CharField()
    unit = serializers.CharField()
    citation = serializers.CharField()
    inputs = serializers.ListField(child=serializers.DictField(), help_text="Name, type, unit, range, choices.")


class CalculatorListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: CalculatorOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response([c.describe() for c in all_calculators()])


class RiskResultOutputSerializer(serializers.Serializer[Any]):
    calculator = serializers.CharField()
    version = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    unit = serializers.CharField()
    category = serializers.CharField(allow_blank=True)
    contributions = serializers.JSONField(help_text="Each input's share of the result.")
    inputs = serializers.JSONField(help_text="Each input used, in the calculator's unit.")
    citation = serializers.CharField()
    details = serializers.JSONField(required=False)


class RiskCalculateApi(APIView):
    """Inputs as a JSON object; 200 with value, unit, category, contributions and citation, or
    400 naming every input that is missing, out of range, in a wrong unit or of a wrong type."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=OpenApiTypes.OBJECT,
                   responses={200: RiskResultOutputSerializer,
                              400: OpenApiResponse(description="Every input that is missing, out of range, "
                                                               "in a wrong unit or of a wrong type.")})
    def post(self, request: Request, name: str) -> Response:
        try:
            calculator = get(name)
        except UnknownCalculator as exc:
            raise NotFound(str(exc)) from None
        data: Any = request.data
        try:
            result = calculator(data)
        except CalculatorInputError as exc:
            return Response(
                {"error": {"status": 400, "code": "invalid_input", "message": str(exc), "details": exc.as_dict()}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(result.as_dict())


class RiskAssessmentOutputSerializer(serializers.ModelSerializer[RiskAssessment]):
    id = serializers.UUIDField(source="external_id", read_only=True)
    contributions = serializers.JSONField(help_text="Each input's share of the result.")
    inputs = serializers.JSONField(help_text="Each input used, with its unit, date and source row.")
    missing = serializers.JSONField(help_text="Inputs the record lacked (nothing is guessed).")
    problems = serializers.JSONField(help_text="Inputs outside the source's valid range, and why.")

    class Meta:
        model = RiskAssessment
        fields = ["id", "calculator", "calculator_version", "status", "value", "unit", "category", "contributions",
                  "inputs", "missing", "problems", "citation", "as_of", "computed_at"]


class PatientRiskListApi(ListAPIView[RiskAssessment]):
    """The current assessment per calculator (the latest row of each): computed ones first."""

    permission_classes = [IsAuthenticated]
    serializer_class = RiskAssessmentOutputSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            response = super().list(request, *args, **kwargs)
            audit_record(user=request.user, action="view", target="api:risk", patient=self._patient,
                         request=request)
        return response

    def get_queryset(self) -> Any:
        self._patient = patient_for_api(self.request, self.kwargs["external_id"])
        return risk_assessment_latest_list(patient=self._patient)
