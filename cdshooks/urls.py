"""Mounted at /cds-services (CDS Hooks 2.0.1: discovery, service, feedback) by cdss/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.discovery_view, name="cds-discovery"),
    path("/cards/<uuid:card_uuid>", views.card_explain, name="cds-card"),
    path("/<slug:service_id>", views.service_view, name="cds-service"),
    path("/<slug:service_id>/feedback", views.feedback_view, name="cds-feedback"),
]
