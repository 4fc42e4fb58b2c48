from .roles import ADMIN, CLINICIAN, CURATOR, user_roles


def roles(request):
    mine = user_roles(request.user)
    admin = ADMIN in mine
    return {
        "roles": mine,
        "is_curator": admin or CURATOR in mine,
        "is_clinician": admin or CLINICIAN in mine,
        "is_admin": admin,
    }
