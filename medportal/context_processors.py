from django.utils.translation import gettext_lazy as _

from .roles import ADMIN, CLINICIAN, CURATOR, user_roles

ROLE_LABELS = {CURATOR: _("curator"), CLINICIAN: _("clinician"), ADMIN: _("admin")}


def roles(request):
    mine = user_roles(request.user)
    admin = ADMIN in mine
    return {
        "roles": mine,
        "role_labels": [ROLE_LABELS[r] for r in sorted(mine)],
        "is_curator": admin or CURATOR in mine,
        "is_clinician": admin or CLINICIAN in mine,
        "is_admin": admin,
    }
