from django.apps import AppConfig


class CdssConfig(AppConfig):
    name = "cdss"
    verbose_name = "Decision support and platform"
