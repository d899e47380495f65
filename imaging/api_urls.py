from django.urls import path

from . import api

urlpatterns = [
    path("", api.ImagingUploadApi.as_view(), name="api-imaging-upload"),
]
