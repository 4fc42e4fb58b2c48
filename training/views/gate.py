"""Regression gate actions on the job page (admins): open the gate, override a blocked one."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from medportal.errors import ApplicationError
from medportal.roles import ADMIN, role_required
from training.models import AdapterGate, FineTuneJob
from training.services.gate import gate_open, gate_override


@role_required(ADMIN)
@require_POST
def gate_open_view(request, pk):
    job = get_object_or_404(FineTuneJob, pk=pk)
    try:
        gate_open(actor=request.user, job=job, metric=request.POST.get("metric") or "rougel")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("The regression gate is evaluating the adapter against its parent."))
    return redirect("training:job-detail", pk=job.pk)


@role_required(ADMIN)
@require_POST
def gate_override_view(request, pk):
    gate = get_object_or_404(AdapterGate.objects.select_related("job"), job_id=pk)
    try:
        gate_override(actor=request.user, gate=gate, reason=request.POST.get("reason", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("The adapter is let through the regression gate."))
    return redirect("training:job-detail", pk=pk)


urlpatterns = [
    path("jobs/<int:pk>/gate/", gate_open_view, name="job-gate-open"),
    path("jobs/<int:pk>/gate/override/", gate_override_view, name="job-gate-override"),
]
