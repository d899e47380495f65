from django.apps import AppConfig


class DecisionConfig(AppConfig):
    verbose_name = "Decision support"
    name = "decision"

    def ready(self) -> None:
        from django.conf import settings

        from cdss.jobs.registry import JobKind, register
        from cdss.jobs.triggers import on_facts_change, on_job_succeeded, on_record_change
        from imaging.jobs import IMAGING_KIND
        from nlp.jobs import NLP_KIND
        from risk.jobs import RISK_KIND

        from . import jobs

        register(JobKind(name=jobs.DECISION_KIND, handler=jobs.run, queue="default", version="1", per_patient=True,
                         batch_size=500, description="Rules and recommendations"))
        register(JobKind(name=jobs.BACKTEST_KIND, handler=jobs.run_backtest_chunk, writer=jobs.write_backtest_chunk,
                         queue="default", version="1", description="Backtest of a rule version (one chunk)"))
        on_record_change(jobs.DECISION_KIND)
        # a clinician's verdict on an image finding (rules read imaging:<label>.reviewed / .disputed)
        on_facts_change(jobs.DECISION_KIND)
        # new risk scores, note findings or image findings: evaluate the patient again
        for kind in (RISK_KIND, NLP_KIND, IMAGING_KIND):
            on_job_succeeded(kind, jobs.evaluate_after_results)
        # The schedule's sweep (new risk and note results, stale evaluations). Declared here so the
        # project settings need not know this app; beat reads the schedule after the apps load.
        schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None)
        if isinstance(schedule, dict):
            schedule.setdefault("decision-sweep", {
                "task": "decision.sweep", "schedule": float(getattr(settings, "CDSS_DECISION_SWEEP_EVERY", 300.0))})
