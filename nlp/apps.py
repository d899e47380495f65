from django.apps import AppConfig


class NlpConfig(AppConfig):
    name = "nlp"
    verbose_name = "Notes (NLP)"

    def ready(self) -> None:
        from cdss.jobs.registry import JobKind, register
        from cdss.jobs.triggers import on_record_change

        from . import jobs

        register(JobKind(name=jobs.NLP_KIND, handler=jobs.run, writer=jobs.write, queue="nlp", version="1",
                         per_patient=True, batch_size=50, description="Facts from clinical notes"))
        on_record_change(jobs.NLP_KIND)
