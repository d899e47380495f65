"""CDS Hooks 2.0.1 endpoints (discovery, service, feedback) and the card explanation page."""

from django.urls import path

from . import views

urlpatterns = [
    path("cds-services", views.discovery_view, name="cds-discovery"),
    path("cds-services/cards/<uuid:card_uuid>", views.card_explain, name="cds-card"),
    path("cds-services/<slug:service_id>", views.service_view, name="cds-service"),
    path("cds-services/<slug:service_id>/feedback", views.feedback_view, name="cds-feedback"),
]
