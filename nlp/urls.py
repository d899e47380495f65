from django.urls import path

from . import views

urlpatterns = [
    path("patients/<uuid:external_id>/notes/", views.note_create_page, name="note-create"),
    path("patients/<uuid:external_id>/notes/<uuid:note_id>/", views.note_detail, name="note-detail"),
    path("patients/<uuid:external_id>/notes/<uuid:note_id>/facts/<uuid:fact_id>/feedback/", views.note_fact_feedback,
         name="note-fact-feedback"),
]
