"""Chat pages: sessions, the chat itself (streamed over the WebSocket), ratings and
corrections, rating exports, the blind A/B arena and its leaderboard.

Clinicians and admins chat, rate and vote; every role may read the leaderboard and export
ratings (they are evaluation data, like reports).
"""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import selectors
from training.inference import SEED_CHAT_PARAMS
from chat.models import ArenaBattle, Rating
from chat.services import (
    DEFAULT_SYSTEM_PROMPT,
    arena_battle_draw,
    arena_battle_void,
    arena_vote,
    chat_session_create,
    chat_session_start,
    chat_session_update,
    rating_save,
)
from curation.models import Department
from medportal.errors import ApplicationError
from medportal.params import InvalidId, id_param, page_filter_ids
from medportal.roles import ADMIN, CLINICIAN, role_required

PARAM_FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty")


class ParamsForm(forms.Form):
    temperature = forms.FloatField(label=gettext_lazy("Temperature"), min_value=0, max_value=5, initial=SEED_CHAT_PARAMS.temperature)
    top_p = forms.FloatField(label=gettext_lazy("Top-p"), min_value=0.01, max_value=1, initial=SEED_CHAT_PARAMS.top_p)
    top_k = forms.IntegerField(label=gettext_lazy("Top-k"), min_value=0, max_value=1000, initial=SEED_CHAT_PARAMS.top_k)
    max_new_tokens = forms.IntegerField(label=gettext_lazy("Max new tokens"), min_value=1, max_value=8192, initial=SEED_CHAT_PARAMS.max_new_tokens)
    repetition_penalty = forms.FloatField(
        label=gettext_lazy("Repetition penalty"), min_value=0.5, max_value=3, initial=SEED_CHAT_PARAMS.repetition_penalty
    )

    def params(self) -> dict:
        return {k: self.cleaned_data[k] for k in PARAM_FIELDS}

    def style_fields(self) -> None:
        """Bootstrap's small controls on every field; parameters accept any decimal."""
        for name, field in self.fields.items():
            field.widget.attrs.setdefault("class", "form-select form-select-sm" if isinstance(field, forms.ChoiceField) else "form-control form-control-sm")
            if name in PARAM_FIELDS:
                field.widget.attrs["step"] = "any"


class ChatSettingsForm(ParamsForm):
    model = forms.ChoiceField(label=gettext_lazy("Model"))
    system_prompt = forms.CharField(label=gettext_lazy("System prompt"), required=False, widget=forms.Textarea(attrs={"rows": 3}), initial=DEFAULT_SYSTEM_PROMPT)
    department = forms.ModelChoiceField(label=gettext_lazy("Department"), queryset=Department.objects.all(), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(c.key, c.label) for c in selectors.contestants()]
        self.style_fields()


def _initial_for(session) -> dict:
    params = {**SEED_CHAT_PARAMS.to_dict(), **(session.params or {})}
    return {
        "model": f"{session.base_model_id}" if session.job_id is None else f"{session.base_model_id}:{session.job_id}",
        "system_prompt": session.system_prompt,
        "department": session.department_id,
        **{k: params.get(k) for k in PARAM_FIELDS},
    }


@role_required(CLINICIAN)
@require_http_methods(["GET", "POST"])
def chat_index(request):
    form = ChatSettingsForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        contestant = selectors.contestant_from_key(form.cleaned_data["model"])
        try:
            session = chat_session_create(
                user=request.user,
                base_model=contestant.base_model,
                job=contestant.job,
                system_prompt=form.cleaned_data["system_prompt"],
                params=form.params(),
                department=form.cleaned_data["department"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("chat:session", pk=session.pk)
    return render(
        request,
        "chat/index.html",
        {"form": form, "sessions": selectors.session_list(user=request.user)[:100], "has_models": bool(form.fields["model"].choices)},
    )


@role_required(CLINICIAN)
@require_POST
def chat_new(request):
    """One click to a prompt: a chat with the model (and settings) of the user's last chat."""
    try:
        session = chat_session_start(user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("chat:index")
    return redirect("chat:session", pk=session.pk)


@role_required(CLINICIAN)
@require_http_methods(["GET", "POST"])
def chat_session(request, pk: int):
    session = selectors.session_get_for_user(user=request.user, pk=pk)
    form = ChatSettingsForm(request.POST or None, initial=_initial_for(session))
    if request.method == "POST":
        if form.is_valid():
            contestant = selectors.contestant_from_key(form.cleaned_data["model"])
            try:
                chat_session_update(
                    user=request.user,
                    session=session,
                    base_model=contestant.base_model,
                    job=contestant.job,
                    system_prompt=form.cleaned_data["system_prompt"],
                    params=form.params(),
                )
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, _("Chat settings saved."))
                return redirect("chat:session", pk=session.pk)
    return render(
        request,
        "chat/session.html",
        {
            "session": session,
            "form": form,
            "chat_messages": selectors.session_messages(session, user=request.user),
            "sessions": selectors.session_list(user=request.user)[:50],
            "reason_tags": Rating.REASON_TAGS,
            "rubric": [(name, Rating._meta.get_field(name).verbose_name) for name in Rating.RUBRIC],
            "seed_params": json.dumps(SEED_CHAT_PARAMS.to_dict()),
            "greedy_params": json.dumps({**SEED_CHAT_PARAMS.to_dict(), "temperature": 0.0, "repetition_penalty": 1.0}),
        },
    )


@role_required(CLINICIAN)
@require_POST
def chat_rate(request, pk: int):
    """Save the user's rating of an answer (form post or fetch; JSON back for fetch)."""
    message = selectors.message_get_for_user(user=request.user, pk=pk)
    data = request.POST
    try:
        rating = rating_save(
            user=request.user,
            message=message,
            thumb=data.get("thumb", ""),
            scores={name: data.get(name) for name in Rating.RUBRIC if data.get(name) not in (None, "")},
            reason_tags=data.getlist("reason_tags"),
            comment=data.get("comment", ""),
            corrected_answer=data.get("corrected_answer", ""),
        )
    except ApplicationError as exc:
        if request.headers.get("Accept", "").startswith("application/json"):
            return JsonResponse({"error": {"code": exc.code, "message": exc.message, "details": exc.details}}, status=400)
        messages.error(request, exc.message)
        return redirect("chat:session", pk=message.session_id)
    payload = {"rating": rating.pk, "thumb": rating.thumb, "correction_pair": rating.correction_pair_id}
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(payload)
    if rating.correction_pair_id:
        messages.success(request, _("Rating saved; the correction is QA pair #%(id)s, now in review.") % {"id": rating.correction_pair_id})
    else:
        messages.success(request, _("Rating saved."))
    return redirect("chat:session", pk=message.session_id)


@role_required()
@require_GET
def ratings_export(request, fmt: str):
    """All ratings (or one adapter's: ?job=ID) as JSON or XLSX."""
    if fmt not in ("json", "xlsx"):
        raise Http404("unknown format")
    try:
        job_id = id_param(request.GET, "job")
    except InvalidId as exc:  # a file export answers 400 naming the parameter, like the API
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    qs = selectors.ratings_for_export(job_id=job_id)
    rows = selectors.rating_rows(qs)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    if fmt == "json":
        response = HttpResponse(json.dumps(rows, ensure_ascii=False, indent=1), content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="ratings-{stamp}.json"'
        return response
    from medportal.xlsx import MIME_TYPE, XlsxWriter

    book = XlsxWriter()  # the one writer: formula-like text stays text, illegal characters dropped
    columns = list(rows[0]) if rows else ["rating_id"]
    sheet = book.sheet("ratings", columns)
    for row in rows:
        sheet.append(", ".join(map(str, v)) if isinstance(v, list) else v for v in (row[c] for c in columns))
    response = HttpResponse(book.getvalue(), content_type=MIME_TYPE)
    response["Content-Disposition"] = f'attachment; filename="ratings-{stamp}.xlsx"'
    return response


# --------------------------------------------------------------------------- arena


class ArenaForm(ParamsForm):
    """A prompt and how to generate; the two contenders are drawn by the system, not chosen."""

    prompt = forms.CharField(label=gettext_lazy("Prompt"), widget=forms.Textarea(attrs={"rows": 4, "class": "form-control"}))
    department = forms.ModelChoiceField(label=gettext_lazy("Department"), queryset=Department.objects.all(), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.style_fields()


def _next_battle_form(battle: ArenaBattle) -> ArenaForm:
    """The form under a finished battle: an empty prompt, the same department and parameters."""
    params = {**SEED_CHAT_PARAMS.to_dict(), **(battle.params or {})}
    form = ArenaForm(initial={"department": battle.department_id, **{k: params.get(k) for k in PARAM_FIELDS}})
    form.fields["prompt"].widget.attrs.update({"rows": 3, "autofocus": True})
    return form


@role_required(CLINICIAN)
@require_http_methods(["GET", "POST"])
def arena_new(request):
    form = ArenaForm(request.POST or None)
    contenders = len(selectors.contestants())
    if request.method == "POST" and form.is_valid():
        try:
            battle = arena_battle_draw(
                user=request.user, prompt=form.cleaned_data["prompt"], params=form.params(), department=form.cleaned_data["department"]
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("chat:arena-battle", pk=battle.pk)
    recent = selectors.battle_recent_for_user(user=request.user)
    return render(request, "chat/arena_new.html", {"form": form, "recent": recent, "contenders": contenders})


@role_required(CLINICIAN)
@require_http_methods(["GET", "POST"])
def arena_battle(request, pk: int):
    battle = selectors.battle_get_for_user(user=request.user, pk=pk)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "void":
                battle = arena_battle_void(user=request.user, battle=battle, reason=ArenaBattle.VoidReason.IDENTITY)
                messages.info(request, _("Battle void: it will not count. The names are shown below."))
            else:
                battle = arena_vote(user=request.user, battle=battle, vote=request.POST.get("vote", ""))
                messages.success(request, _("Vote recorded."))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("chat:arena-battle", pk=battle.pk)
    over = battle.is_over  # the names (and statistics) leave the server only then
    sides = [
        ("a", battle.label_a if over else "", battle.answer_a, battle.stats_a if over else {}),
        ("b", battle.label_b if over else "", battle.answer_b, battle.stats_b if over else {}),
    ]
    return render(
        request,
        "chat/arena_battle.html",
        {"battle": battle, "sides": sides, "votes": ArenaBattle.Vote.choices, "next_form": _next_battle_form(battle) if over else None},
    )


ARENA_ADMIN_STATUSES = (
    ("", gettext_lazy("All")),
    ("counted", gettext_lazy("Counted")),
    ("open", gettext_lazy("Not voted yet")),
    ("void", gettext_lazy("Void")),
)


@role_required(ADMIN)
@require_GET
def arena_admin(request):
    """Every battle with its contenders, answers and vote; an admin can void one."""
    status = request.GET.get("status", "")
    if status not in dict(ARENA_ADMIN_STATUSES):
        status = ""
    page = Paginator(selectors.battle_list_for_admin(status=status), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "chat/arena_admin.html",
        {"page": page, "status": status, "statuses": ARENA_ADMIN_STATUSES, "void_reasons": ArenaBattle.VoidReason.choices},
    )


@role_required(ADMIN)
@require_POST
def arena_admin_void(request, pk: int):
    battle = selectors.battle_get_for_admin(user=request.user, pk=pk)
    try:
        arena_battle_void(user=request.user, battle=battle, reason=request.POST.get("reason", ""), note=request.POST.get("note", ""))
    except ApplicationError as exc:
        messages.error(request, _("Battle #%(id)s: %(message)s") % {"id": battle.pk, "message": exc.message})
    else:
        messages.success(request, _("Battle #%(id)s is void: the leaderboard no longer counts it.") % {"id": battle.pk})
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(back)
    return redirect("chat:arena-admin")


@role_required()
@require_GET
def leaderboard(request):
    ids = page_filter_ids(request, "department")  # not an id: nothing listed, and a message
    department_id = ids["department"] if ids else None
    rows = selectors.leaderboard(department_id=department_id) if ids is not None else []
    return render(
        request,
        "chat/leaderboard.html",
        {
            "ranked": [r for r in rows if not r.provisional],
            "provisional": [r for r in rows if r.provisional],
            "min_votes": settings.MEDPORTAL_ARENA_MIN_VOTES,
            "departments": selectors.leaderboard_departments(),
            "department_id": department_id,
            "counted": selectors.counted_battles(department_id=department_id).count(),
        },
    )


urlpatterns = [
    path("", chat_index, name="index"),
    path("new/", chat_new, name="new"),
    path("<int:pk>/", chat_session, name="session"),
    path("messages/<int:pk>/rate/", chat_rate, name="rate"),
    path("ratings/export.<str:fmt>", ratings_export, name="ratings-export"),
    path("arena/", arena_new, name="arena"),
    path("arena/<int:pk>/", arena_battle, name="arena-battle"),
    path("arena/battles/", arena_admin, name="arena-admin"),
    path("arena/battles/<int:pk>/void/", arena_admin_void, name="arena-admin-void"),
    path("arena/leaderboard/", leaderboard, name="leaderboard"),
]
