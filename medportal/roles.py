"""Roles are Django groups: curator, clinician (reviewer) and admin.

A superuser counts as admin. Every page goes through ``role_required`` and every API view
through ``HasRole``; object-level rules live in the ``access_*`` helpers of each app.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

CURATOR = "curator"
CLINICIAN = "clinician"
ADMIN = "admin"
ALL_ROLES = (CURATOR, CLINICIAN, ADMIN)


def user_roles(user) -> frozenset[str]:
    """The user's roles, cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_medportal_roles", None)
    if cached is None:
        names = set(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True))
        if user.is_superuser:
            names.add(ADMIN)
        cached = frozenset(names)
        user._medportal_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    """True if the user holds any of ``roles``; admin holds every role."""
    mine = user_roles(user)
    return ADMIN in mine or any(r in mine for r in roles)


def is_admin(user) -> bool:
    return ADMIN in user_roles(user)


def role_required(*roles: str):
    """View decorator: login required, then one of ``roles`` (admin always passes).

    With no roles given, any MedPortal role is enough.
    """
    wanted: Iterable[str] = roles or ALL_ROLES

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *wanted):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapper.required_roles = tuple(wanted)
        return wrapper

    return decorator


class HasRole(BasePermission):
    """DRF permission: the view's ``required_roles`` (default: any role).

    ``write_roles`` (optional) applies to unsafe methods.
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        roles = getattr(view, "required_roles", ALL_ROLES)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            roles = getattr(view, "write_roles", roles)
        return has_role(user, *roles)


class HasAnyRole(HasRole):
    """Default API permission: authenticated and holding at least one MedPortal role."""

