from django.urls import path

from . import views

urlpatterns = [
    path("patients/<uuid:external_id>/recommendations/", views.patient_recommendations,
         name="patient-recommendations"),
    path("recommendations/", views.recommendation_worklist, name="recommendation-worklist"),
    path("recommendations/counts/", views.worklist_recommendation_counts, name="worklist-recommendation-counts"),
    path("recommendations/<uuid:external_id>/accept/", views.recommendation_accept_view,
         name="recommendation-accept"),
    path("recommendations/<uuid:external_id>/override/", views.recommendation_override_view,
         name="recommendation-override"),
    path("recommendations/<uuid:external_id>/snooze/", views.recommendation_snooze_view,
         name="recommendation-snooze"),
    path("rules/statistics/", views.rule_statistics_overview, name="rule-statistics-overview"),
    path("rules/<slug:slug>/statistics/", views.rule_statistics_view, name="rule-statistics"),
    path("rules/<slug:slug>/versions/diff/", views.rule_version_diff_view, name="rule-version-diff"),
]
