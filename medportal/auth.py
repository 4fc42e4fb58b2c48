"""Sign-in hardening: brute-force lockout (django-axes) for the login page and API tokens,
the lockout page, its audit event, and the audited password change.

django-axes counts failed sign-ins per account and per client address (``AXES_*`` settings)
and refuses further attempts — even with the right password — until the cool-off has passed.
The login form reaches it through ``AxesStandaloneBackend``; an API token never goes through
``authenticate()``, so ``LockoutTokenAuthentication`` reports a bad token to the same counter.
"""

from __future__ import annotations

from datetime import timedelta

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.signals import user_login_failed
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.translation import ngettext
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header

from .audit import audit_record
from .models import AuditEvent

LOCKED_OUT_ACTION = "auth.locked_out"
PASSWORD_CHANGED_ACTION = "auth.password_changed"


class LockoutBackend(AxesStandaloneBackend):
    """First authentication backend: refuses a locked-out account or address.

    A sign-in over HTTP always carries its request (the login form, the admin); a call without
    one (Django's test client, a script) has no address to count, so the check is skipped
    rather than failing as axes' own backend does."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or, behind our reverse proxy (MEDPORTAL_BEHIND_PROXY),
    the address that proxy appended last to X-Forwarded-For (earlier entries are the client's
    to forge)."""
    if settings.MEDPORTAL_BEHIND_PROXY:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR", "")


def lockout_parameters(request_or_attempt, credentials=None) -> list:
    """AXES_LOCKOUT_PARAMETERS: failures count per account and, separately, per address. A bad
    API token names no account, so only its address counts."""
    if credentials and credentials.get("api_token"):
        return ["ip_address"]
    return ["username", "ip_address"]


def cool_off_minutes(request=None) -> int:
    cool_off = get_cool_off(request) or timedelta(0)
    return max(1, round(cool_off.total_seconds() / 60))


def lockout_message(request=None) -> str:
    minutes = cool_off_minutes(request)
    return ngettext(
        "Too many failed sign-in attempts for this account or from this address. Try again in %(minutes)d minute.",
        "Too many failed sign-in attempts for this account or from this address. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


def lockout_response(request, response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the login page again, with the lockout message, status 429; an API
    call gets the API's error body. (axes' async path passes (request, credentials).)"""
    from django.contrib.auth.forms import AuthenticationForm

    if request.path.startswith("/api/"):
        response = JsonResponse({"error": {"code": "throttled", "message": lockout_message(request), "details": None}}, status=429)
        response["Retry-After"] = str(cool_off_minutes(request) * 60)
        return response

    return render(
        request,
        "registration/login.html",
        {"form": AuthenticationForm(request), "locked_out": lockout_message(request), "next": request.POST.get("next", "")},
        status=429,
    )


def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """Receiver of axes' ``user_locked_out``: one audit event per account (or address) and cool-off."""
    user = get_user_model().objects.filter(username=username).first() if username else None
    if user is not None:
        target = user
    else:
        from axes.models import AccessAttempt

        target = AccessAttempt.objects.filter(ip_address=ip_address).order_by("-attempt_time").first()
        if target is None:
            return
    since = timezone.now() - (get_cool_off(request) or timedelta(minutes=15))
    if AuditEvent.objects.filter(
        action=LOCKED_OUT_ACTION, target_type=target._meta.label_lower, target_id=str(target.pk), created_at__gte=since
    ).exists():
        return
    audit_record(
        actor=None,
        action=LOCKED_OUT_ACTION,
        target=target,
        summary=f"sign-in locked: account {username or '-'} from {ip_address or '-'}",
        changes={"username": username or "", "ip_address": ip_address or "", "path": getattr(request, "path", "")},
    )


class LockoutTokenAuthentication(TokenAuthentication):
    """DRF token authentication under the same lockout as the login page: a wrong token counts
    as a failed sign-in from the client's address; a locked address gets 429, even with a good token.

    First in DEFAULT_AUTHENTICATION_CLASSES, so an anonymous API call is answered 401 with
    ``WWW-Authenticate: Token``."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        django_request = request._request
        credentials = {"api_token": True}
        if not AxesProxyHandler.is_allowed(django_request, credentials):
            raise exceptions.Throttled(wait=int((get_cool_off(django_request) or timedelta(0)).total_seconds()), detail=lockout_message(django_request))
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            user_login_failed.send(sender=type(self), credentials=credentials, request=django_request)
            raise


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change (old password, new one twice, the password validators), audited."""

    success_url = reverse_lazy("password_change_done")

    def form_valid(self, form):
        response = super().form_valid(form)
        audit_record(actor=self.request.user, action=PASSWORD_CHANGED_ACTION, target=self.request.user, summary="password changed")
        return response
