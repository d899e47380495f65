from django.apps import AppConfig


class ImagingConfig(AppConfig):
    verbose_name = "Imaging"
    name = "imaging"
