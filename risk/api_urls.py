from django.urls import path

from . import api

urlpatterns = [
    path("calculators/", api.CalculatorListApi.as_view(), name="api-risk-calculators"),
    path("calculate/<slug:name>/", api.RiskCalculateApi.as_view(), name="api-risk-calculate"),
]
