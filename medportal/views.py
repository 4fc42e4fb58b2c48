from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count
from django.contrib.staticfiles import finders
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from curation.models import ImportBatch, QAPair

from .models import AuditEvent
from .roles import ADMIN, has_role, role_required


@role_required()
def home(request):
    counts = dict(QAPair.objects.values_list("status").annotate(n=Count("id")).order_by())
    statuses = [(value, label, counts.get(value, 0)) for value, label in QAPair.Status.choices]
    recent_imports = ImportBatch.objects.select_related("created_by").order_by("-id")
    if not has_role(request.user, ADMIN):
        recent_imports = recent_imports.filter(created_by=request.user)
    return render(
        request,
        "home.html",
        {"statuses": statuses, "total": sum(counts.values()), "recent_imports": recent_imports[:5]},
    )


@require_GET
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@role_required(ADMIN)
def audit_log(request):
    events = AuditEvent.objects.select_related("actor")
    action = request.GET.get("action", "").strip()
    target = request.GET.get("target", "").strip()
    if action:
        events = events.filter(action=action)
    if target:
        type_, _, id_ = target.partition(":")
        events = events.filter(target_type=type_, target_id=id_) if id_ else events.filter(target_type=type_)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "audit_log.html", {"page": page, "action": action, "target": target})


@require_GET
def favicon(request):
    """/favicon.ico for browsers that ask for it before reading <link rel=icon>."""
    path = finders.find("medportal/favicon.ico")
    if not path:
        raise Http404
    response = FileResponse(open(path, "rb"), content_type="image/vnd.microsoft.icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


def permission_denied(request, exception=None):
    return render(request, "403.html", status=403)
