from django.apps import AppConfig


class CdsHooksConfig(AppConfig):
    verbose_name = "CDS Hooks"
    name = "cdshooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from decision import selectors as decision_selectors

        from . import checks  # noqa: F401  (registers the deploy check)
        from .selectors import external_answers

        # CDS Hooks feedback with no recommendation to attach to counts in the per-rule statistics.
        if external_answers not in decision_selectors.ANSWER_PROVIDERS:
            decision_selectors.ANSWER_PROVIDERS.append(external_answers)
