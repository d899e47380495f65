from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Risk"

    def ready(self) -> None:
        from cdss.jobs.registry import JobKind, register
        from cdss.jobs.triggers import on_record_change

        from . import jobs

        register(JobKind(name=jobs.RISK_KIND, handler=jobs.run, queue="risk", version="1", per_patient=True,
                         batch_size=500, description="Risk calculators from the record"))
        on_record_change(jobs.RISK_KIND)
