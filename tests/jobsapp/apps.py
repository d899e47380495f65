from django.apps import AppConfig


class JobsappConfig(AppConfig):
    name = "tests.jobsapp"
    label = "jobsapp"

    def ready(self) -> None:
        from . import control, kinds  # noqa: F401 - registers the test job kinds and control command
