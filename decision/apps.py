from django.apps import AppConfig


class DecisionConfig(AppConfig):
    verbose_name = "Decision support"
    name = "decision"
