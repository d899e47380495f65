from django.apps import AppConfig


class CdsHooksConfig(AppConfig):
    verbose_name = "CDS Hooks"
    name = "cdshooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the deploy check)
