from django.urls import path

from . import views_jobs

urlpatterns = [
    path("patients/<uuid:external_id>/jobs/", views_jobs.patient_jobs, name="patient-jobs"),
    # The same address under the name of what a POST does, so templates say what they mean; the
    # resolver always lands on the entry above, whose view answers both methods.
    path("patients/<uuid:external_id>/jobs/", views_jobs.patient_jobs, name="patient-jobs-enqueue"),
]
