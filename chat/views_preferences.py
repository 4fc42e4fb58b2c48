"""Collect preference pairs from chat (a button on the preference-pair list): curators and admins."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from chat.preferences import preference_pairs_collect
from medportal.errors import ApplicationError
from medportal.roles import CURATOR, role_required


@role_required(CURATOR)
@require_POST
def preference_collect_view(request):
    try:
        result = preference_pairs_collect(actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("Collected %(n)s new preference pairs from chat (arena votes %(arena)s, ratings %(rating)s, corrections %(correction)s); %(dup)s were already stored.")
            % {
                "n": result.total,
                "arena": result.created["arena_vote"],
                "rating": result.created["rating"],
                "correction": result.created["correction"],
                "dup": result.existing + result.duplicates,
            },
        )
    return redirect("curation:preference-list")


urlpatterns = [path("preferences/collect/", preference_collect_view, name="preference-collect")]
