from django.urls import path

from . import api

P = "patients/<uuid:external_id>/"

urlpatterns = [
    path("fhir/", api.FhirBundleImportApi.as_view(), name="api-fhir-import"),
    path("patients/", api.PatientListApi.as_view(), name="api-patient-list"),
    path(P, api.PatientDetailApi.as_view(), name="api-patient-detail"),
    path(P + "$everything", api.PatientEverythingApi.as_view(), name="api-patient-everything"),
    path(P + "conditions/", api.PatientConditionListApi.as_view(), name="api-patient-conditions"),
    path(P + "observations/", api.PatientObservationListApi.as_view(), name="api-patient-observations"),
    path(P + "medications/", api.PatientMedicationListApi.as_view(), name="api-patient-medications"),
    path(P + "allergies/", api.PatientAllergyListApi.as_view(), name="api-patient-allergies"),
    # GET /notes/ (the list) shares its address with the POST that adds a note (nlp): the project's
    # URL conf joins the two views; see cdss/urls.py.
    path(P + "notes/<uuid:note_id>/", api.PatientNoteDetailApi.as_view(), name="api-patient-note"),
]
