from django.urls import path

from . import views

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("patients/<uuid:external_id>/", views.patient_detail, name="patient-detail"),
    path("break-glass/", views.break_glass, name="break-glass"),
]
