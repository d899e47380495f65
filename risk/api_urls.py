from django.urls import path

from . import api

urlpatterns = [
    path("risk/calculators/", api.CalculatorListApi.as_view(), name="api-risk-calculators"),
    path("risk/calculate/<slug:name>/", api.RiskCalculateApi.as_view(), name="api-risk-calculate"),
    path("patients/<uuid:external_id>/risk/", api.PatientRiskListApi.as_view(), name="api-patient-risk"),
]
