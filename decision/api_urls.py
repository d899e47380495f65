from django.urls import path

from . import api

urlpatterns = [
    path("patients/<uuid:external_id>/recommendations/", api.PatientRecommendationListApi.as_view(),
         name="api-patient-recommendations"),
    path("recommendations/<uuid:external_id>/", api.RecommendationDetailApi.as_view(), name="api-recommendation"),
    path("recommendations/<uuid:external_id>/feedback/", api.RecommendationFeedbackApi.as_view(),
         name="api-recommendation-feedback"),
]
