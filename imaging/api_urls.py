from django.urls import path

from . import api

urlpatterns = [
    path("", api.ImagingUploadApi.as_view(), name="api-imaging-upload"),
    path("findings/<uuid:finding_id>/heatmap/", api.FindingHeatmapApi.as_view(), name="api-imaging-finding-heatmap"),
    path("findings/<uuid:finding_id>/result/", api.FindingResultApi.as_view(), name="api-imaging-finding-result"),
    path("findings/<uuid:finding_id>/report/", api.FindingReportApi.as_view(), name="api-imaging-finding-report"),
    # DICOMweb STOW-RS: clients post to their configured service root + "/studies", no trailing slash
    path("dicomweb/studies", api.StowRsApi.as_view(), name="api-imaging-stow"),
    path("dicomweb/studies/<str:study_uid>", api.StowRsStudyApi.as_view(), name="api-imaging-stow-study"),
    path("findings/<uuid:finding_id>/feedback/", api.FindingFeedbackApi.as_view(), name="api-imaging-finding-feedback"),
]
