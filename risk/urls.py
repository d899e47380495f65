from django.urls import path

from . import views

urlpatterns = [
    path("patients/<uuid:external_id>/risk/", views.patient_risk, name="patient-risk"),
]
