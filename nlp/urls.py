from django.urls import path

from . import api, views

urlpatterns = [
    path("patients/<uuid:external_id>/notes/", views.note_create_page, name="note-create"),
    path("patients/<uuid:external_id>/notes/<uuid:note_id>/", views.note_detail, name="note-detail"),
    path("patients/<uuid:external_id>/notes/<uuid:note_id>/facts/<uuid:fact_id>/feedback/", views.note_fact_feedback,
         name="note-fact-feedback"),
    path("api/patients/<uuid:external_id>/notes/", api.PatientNoteCreateApi.as_view(), name="api-note-create"),
]
