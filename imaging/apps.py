from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error
from django.core.checks import register as register_check


class ImagingConfig(AppConfig):
    verbose_name = "Imaging"
    name = "imaging"

    def ready(self) -> None:
        from cdss.jobs.registry import JobKind, register
        from cdss.jobs.triggers import on_job_succeeded
        from patients.fhir.exporter import export_provider

        from . import jobs, pacs
        from .fhir import imaging_fhir_resources

        export_provider(imaging_fhir_resources)  # studies and findings in the record's FHIR export

        # Images are analysed when they arrive (the upload queues the job), not on every change
        # of the record.
        register(JobKind(name=jobs.IMAGING_KIND, handler=jobs.run, writer=jobs.write, discard=jobs.discard,
                         queue="imaging", version="1", per_patient=True, time_limit=30 * 60,
                         description="Image findings with heat maps (models for the image's modality and body part)"))
        register(JobKind(name=pacs.PACS_KIND, handler=pacs.send, writer=pacs.write, queue="default", version="1",
                         time_limit=10 * 60, description="Findings' DICOM results sent to the PACS (C-STORE)"))
        on_job_succeeded(jobs.IMAGING_KIND, pacs.after_imaging_job)
        register_check(check_pacs_settings)
        # The imaging sweep (imaging.tasks): held images filed once the record has their patient,
        # and the analysis of images stored without one queued. Declared here so the project settings need not know this app; beat reads the schedule
        # after the apps load.
        schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None)
        if isinstance(schedule, dict):
            schedule.setdefault("imaging-sweep", {
                "task": "imaging.sweep", "schedule": float(getattr(settings, "CDSS_IMAGING_SWEEP_EVERY", 60.0))})


def check_pacs_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    """A wrong PACS address or sending mode is named at start, not when a result is sent."""
    from .pacs import pacs_checks

    return [Error(problem, id="imaging.E001") for problem in pacs_checks()]
