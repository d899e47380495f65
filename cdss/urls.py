from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

urlpatterns = [
    path("health", views.health, name="health"),
    path("health/workers", views.health_workers, name="health-workers"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/risk/", include("risk.api_urls")),
    path("api/imaging/", include("imaging.api_urls")),
    path("api/", include("patients.api_urls")),
    path("", include("cdss.urls_jobs")),
    path("", include("risk.urls")),
    path("", include("imaging.urls")),
    path("", include("nlp.urls")),
    path("", include("decision.urls")),
    path("", include("cdshooks.urls")),
    path("", include("patients.urls")),
]
