"""Forms of the QA-pair pages. They parse and display; the rules live in the services."""

from __future__ import annotations

import json

from django import forms
from django.utils.translation import gettext_lazy as _

from curation.models import QAPair, Review
from medportal.params import parse_id


def _textarea(rows: int, **attrs) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "class": "form-control", **attrs})


class HistoryField(forms.CharField):
    """Earlier turns as JSON: ``[["question", "answer"], ...]``."""

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return json.dumps(list(value), ensure_ascii=False, indent=1) if value else ""
        return value

    def to_python(self, value):
        value = super().to_python(value)
        if not value or not value.strip():
            return []
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc.msg}) from None
        ok = isinstance(data, list) and all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in data
        )
        if not ok:
            raise forms.ValidationError(_('History must be a list of [question, answer] pairs, e.g. [["问", "答"]].'))
        return data


class PairForm(forms.Form):
    """Content and labels of a pair (create and edit)."""

    instruction = forms.CharField(label=_("Question"), widget=_textarea(4))
    input = forms.CharField(label=_("Input"), required=False, widget=_textarea(2))
    output = forms.CharField(label=_("Answer"), widget=_textarea(8))
    system = forms.CharField(label=_("System prompt"), required=False, widget=_textarea(2))
    reasoning = forms.CharField(label=_("Reasoning"), required=False, widget=_textarea(3))
    history = HistoryField(
        label=_("History"),
        required=False,
        widget=_textarea(3, spellcheck="false"),
        help_text=_('Earlier turns as JSON: [["question", "answer"], ...]'),
    )
    department = forms.CharField(
        label=_("Department"),
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"class": "form-control", "list": "department-names"}),
    )
    tags = forms.CharField(
        label=_("Tags"),
        required=False,
        help_text=_("Comma-separated."),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    disease_codes = forms.CharField(
        label=_("Disease codes"),
        required=False,
        help_text=_("Comma-separated: ICD10:E11.9, ORPHA:558, OMIM:154700, HPO:HP:0001166, or free text."),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    difficulty = forms.ChoiceField(
        label=_("Difficulty"),
        required=False,
        choices=[("", "—"), *QAPair.Difficulty.choices],
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    @classmethod
    def initial_for(cls, pair: QAPair) -> dict:
        return {
            "instruction": pair.instruction,
            "input": pair.input,
            "output": pair.output,
            "system": pair.system,
            "reasoning": pair.reasoning,
            "history": pair.history or [],
            "department": pair.department.name if pair.department_id else "",
            "tags": ", ".join(sorted(t.name for t in pair.tags.all())),
            "disease_codes": ", ".join(pair.disease_codes or []),
            "difficulty": pair.difficulty,
            "version": pair.version,
        }

    def changes(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("version", None)
        return data

    def add_service_error(self, exc) -> None:
        """Show an ApplicationError on the fields it names, else at the top of the form."""
        details = exc.details if isinstance(exc.details, dict) else {}
        placed = False
        for name, messages in details.items():
            if name in self.fields and isinstance(messages, list):
                for message in messages:
                    self.add_error(name, str(message))
                placed = True
        if not placed:
            self.add_error(None, exc.message)


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(label=_("Decision"), choices=Review.Decision.choices, widget=forms.RadioSelect)
    comment = forms.CharField(
        label=_("Comment"),
        required=False,
        widget=_textarea(3),
        help_text=_("Required to reject or request changes."),
    )
    confirm_identifiers = forms.BooleanField(
        label=_("I have seen the unmasked identifiers and approve the pair anyway (it cannot be frozen until they are masked)."),
        required=False,
        widget=forms.CheckboxInput(attrs={"class": "form-check-input"}),
    )
    version = forms.IntegerField(widget=forms.HiddenInput)


class CommentForm(forms.Form):
    body = forms.CharField(label=_("Comment"), widget=_textarea(3))


class ReopenForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.TextInput(attrs={"class": "form-control"}))
    version = forms.IntegerField(widget=forms.HiddenInput)


class VersionForm(forms.Form):
    """The version only: submit and mask buttons."""

    version = forms.IntegerField(widget=forms.HiddenInput)


def difficulty_from_label(text: str) -> str:
    """The difficulty code that ``text`` names: the code itself or its label as the UI shows
    it in any of the site's languages ("hard", "Hard", "困难"); ``text`` unchanged otherwise,
    for the service to refuse with the list of choices."""
    from django.conf import settings
    from django.utils import translation

    wanted = (text or "").strip().casefold()
    for code, label in QAPair.Difficulty.choices:
        names = {code.casefold()}
        for lang, _name in settings.LANGUAGES:
            with translation.override(lang):
                names.add(str(label).casefold())
        if wanted in names:
            return code
    return (text or "").strip()


def _coerce_id(value) -> int:
    """A pair id (medportal.params); anything else makes the choice invalid (2**64 reached SQLite)."""
    number = parse_id(value)
    if number is None:
        raise ValueError(value)
    return number


class BulkForm(forms.Form):
    ACTIONS = (
        ("department", _("Set department")),
        ("tag", _("Add tag")),
        ("difficulty", _("Set difficulty")),
        ("submit", _("Submit for review")),
    )
    action = forms.ChoiceField(label=_("Action"), choices=ACTIONS)
    value = forms.CharField(label=_("Value"), required=False, max_length=100)
    ids = forms.TypedMultipleChoiceField(coerce=_coerce_id, required=False, choices=())
    # "Every pair matching the filter", not only the ticked rows: the filter is the query
    # string of the list page (``next``); ``expected`` is the count the user confirmed.
    all_matching = forms.BooleanField(required=False)
    expected = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, data=None, **kwargs):
        super().__init__(data, **kwargs)
        # Any integer id is acceptable here; the service decides what exists.
        ids = data.getlist("ids") if data is not None and hasattr(data, "getlist") else []
        self.fields["ids"].choices = [(i, i) for i in ids]

    def clean_value(self):
        return self.cleaned_data["value"].strip()

    def clean(self):
        data = super().clean()
        if not data.get("all_matching") and not data.get("ids") and "ids" not in self.errors:
            self.add_error("ids", _("Select at least one pair."))
        if data.get("action") == "difficulty" and data.get("value"):
            data["value"] = difficulty_from_label(data["value"])
        return data

    def versions(self, data) -> dict[int, int]:
        """pair id → version the user saw, from the ``v<id>`` inputs of the selected rows."""
        out = {}
        for pk in self.cleaned_data["ids"]:
            try:
                out[pk] = int(data.get(f"v{pk}", ""))
            except ValueError:
                raise forms.ValidationError(_("The page is out of date; reload it.")) from None
        return out
