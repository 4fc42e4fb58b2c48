from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MedportalConfig(AppConfig):
    name = "medportal"
    verbose_name = _("MedPortal")

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
