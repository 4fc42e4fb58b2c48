from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MedportalConfig(AppConfig):
    name = "medportal"
    verbose_name = _("MedPortal")

    def ready(self) -> None:
        import os

        from . import checks  # noqa: F401  (registers system checks)
        from axes.signals import user_locked_out

        from .auth import record_lockout

        user_locked_out.connect(record_lockout, dispatch_uid="medportal.auth.record_lockout")
        from .db import forget_inherited_pools

        # django-q2 forks its workers: a child opens its own database pool (medportal/db.py).
        os.register_at_fork(after_in_child=forget_inherited_pools)
