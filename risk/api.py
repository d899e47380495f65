"""REST API of the calculators: POST /api/risk/calculate/{name}/ and GET /api/risk/calculators/."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from risk.calculators import CalculatorInputError, UnknownCalculator, all_calculators, get


class CalculatorListApi(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response([c.describe() for c in all_calculators()])


class RiskCalculateApi(APIView):
    """Inputs as a JSON object; 200 with value, unit, category, contributions and citation, or
    400 naming every input that is missing, out of range, in a wrong unit or of a wrong type."""

    @extend_schema(request=dict, responses={200: dict, 400: dict})
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
