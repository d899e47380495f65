from django.urls import path

from . import api

urlpatterns = [
    path("fhir/", api.FhirBundleImportApi.as_view(), name="api-fhir-import"),
    path("patients/", api.PatientListApi.as_view(), name="api-patient-list"),
    path("patients/<uuid:external_id>/", api.PatientDetailApi.as_view(), name="api-patient-detail"),
    path("patients/<uuid:external_id>/$everything", api.PatientEverythingApi.as_view(), name="api-patient-everything"),
]
