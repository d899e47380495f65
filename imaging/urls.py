from django.urls import path

from . import views

urlpatterns = [
    path("imaging/review/", views.imaging_review, name="imaging-review"),
    path("imaging/statistics/", views.imaging_model_statistics_view, name="imaging-model-statistics"),
    path("patients/<uuid:external_id>/imaging/", views.patient_imaging, name="patient-imaging"),
    path("patients/<uuid:external_id>/imaging/upload/", views.patient_imaging_upload, name="patient-imaging-upload"),
    path("patients/<uuid:external_id>/imaging/<uuid:instance_id>/", views.imaging_viewer, name="imaging-viewer"),
    path("patients/<uuid:external_id>/imaging/<uuid:instance_id>/thumbnail.png", views.imaging_thumbnail,
         name="imaging-thumbnail"),
    path("patients/<uuid:external_id>/imaging/<uuid:instance_id>/preview.png", views.imaging_preview,
         name="imaging-preview"),
    path("patients/<uuid:external_id>/imaging/findings/<uuid:finding_id>/heatmap.png", views.imaging_heatmap,
         name="imaging-heatmap"),
    path("patients/<uuid:external_id>/imaging/findings/<uuid:finding_id>/result.dcm", views.imaging_result_dicom,
         name="imaging-result-dicom"),
    path("patients/<uuid:external_id>/imaging/findings/<uuid:finding_id>/report.dcm", views.imaging_report_dicom,
         name="imaging-report-dicom"),
    path("patients/<uuid:external_id>/imaging/findings/<uuid:finding_id>/send/", views.imaging_result_send,
         name="imaging-result-send"),
    path("patients/<uuid:external_id>/imaging/findings/<uuid:finding_id>/feedback/", views.finding_feedback,
         name="imaging-finding-feedback"),
]
