from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from imaging.api import PatientImagingListApi
from nlp.api import PatientNoteCreateApi
from patients.api import PatientNoteListApi

from . import api_errors, api_jobs, views


class PatientNotesApi(PatientNoteListApi, PatientNoteCreateApi):
    """A patient's notes: GET lists them, newest first, without their text; POST adds one."""

    # One address, two apps (the list is the record's, adding is nlp's): the project's URL conf is
    # the one module that may import both.

urlpatterns = [
    path("favicon.ico", views.favicon, name="favicon"),
    path("health", views.health, name="health"),
    path("health/workers", views.health_workers, name="health-workers"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/imaging/", include("imaging.api_urls")),
    path("api/patients/<uuid:external_id>/imaging/", PatientImagingListApi.as_view(), name="api-patient-imaging"),
    path("api/patients/<uuid:external_id>/notes/", PatientNotesApi.as_view(), name="api-patient-notes"),
    path("api/patients/<uuid:external_id>/jobs/", api_jobs.PatientJobCreateApi.as_view(), name="api-patient-jobs"),
    path("api/jobs/", api_jobs.JobListApi.as_view(), name="api-job-list"),
    path("api/jobs/<uuid:external_id>/", api_jobs.JobDetailApi.as_view(), name="api-job-detail"),
    path("api/jobs/<uuid:external_id>/retry/", api_jobs.JobRetryApi.as_view(), name="api-job-retry"),
    path("api/", include("risk.api_urls")),
    path("api/", include("decision.api_urls")),
    path("api/", include("patients.api_urls")),
    path("", include("cdss.urls_jobs")),
    path("", include("risk.urls")),
    path("", include("imaging.urls")),
    path("", include("nlp.urls")),
    path("", include("decision.urls")),
    path("", include("cdshooks.urls")),
    path("", include("patients.urls")),
    # Last: an address under /api/ that nothing above answers gets the API's JSON 404.
    re_path(r"^api/", api_errors.api_not_found),
]
