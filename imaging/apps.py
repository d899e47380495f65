from django.apps import AppConfig


class ImagingConfig(AppConfig):
    verbose_name = "Imaging"
    name = "imaging"

    def ready(self) -> None:
        from cdss.jobs.registry import JobKind, register
        from patients.fhir.exporter import export_provider

        from . import jobs
        from .fhir import imaging_fhir_resources

        export_provider(imaging_fhir_resources)  # studies and findings in the record's FHIR export

        # Images are analysed when they arrive (the upload queues the job), not on every change
        # of the record.
        register(JobKind(name=jobs.IMAGING_KIND, handler=jobs.run, writer=jobs.write, discard=jobs.discard,
                         queue="imaging", version="1", per_patient=True, time_limit=30 * 60,
                         description="Image findings with heat maps (models for the image's modality and body part)"))
