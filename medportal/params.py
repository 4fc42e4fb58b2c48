"""Id parameters of query strings and filters: one rule for every page, API and export.

An id is 1 to 19 ASCII digits with a value from 1 to 2**63 - 1 (a ``BigAutoField``: PostgreSQL
``bigint``, SQLite ``INTEGER``). Anything else is not an id, and never reaches the database:
``int()`` alone accepts "０" and "١٢" and refuses "²" (which ``str.isdigit`` accepts), and a
value past 64 bits made SQLite raise OverflowError (a 500) on foreign-key filters.

What a bad id does (docs/api.md, "Invalid filters"):

* API: 400, ``error.details`` names the parameter (``InvalidId``, an ``InvalidInput``).
* Pages: the list is empty and a message names the filter (``page_filter_ids``); the pair
  list's filter bar shows the field error (``IdFilter`` in its filter set).
* File exports: 400 with the message.
* An id that only preselects something (a form's initial choice, the run to compare with) is
  ignored when it is not an id, as when it names nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import django_filters
import django_filters.fields
from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import EMPTY_VALUES
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from medportal.errors import InvalidInput

MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")


def parse_id(value) -> int | None:
    """``value`` as an id, or None when it is not one (see the module docstring)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ID.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= MAX_ID else None


def id_error() -> str:
    return _("Not a valid id: give a whole number from 1 to %(max)s.") % {"max": MAX_ID}


class InvalidId(InvalidInput):
    """A query parameter that should hold an id does not; ``details`` maps it to the reason."""


def id_param(params: Mapping, name: str) -> int | None:
    """The id in ``params[name]``: None when absent or blank, InvalidId when it is not an id."""
    raw = params.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    number = parse_id(raw)
    if number is None:
        raise InvalidId(
            _("The parameter %(name)s is not a valid id.") % {"name": name},
            details={name: [id_error()]},
        )
    return number


def id_params(params: Mapping, *names: str) -> dict[str, int | None]:
    """``id_param`` for each name; one InvalidId listing every bad one."""
    out: dict[str, int | None] = {}
    bad: dict[str, list[str]] = {}
    for name in names:
        try:
            out[name] = id_param(params, name)
        except InvalidId as exc:
            bad.update(exc.details)
    if bad:
        raise InvalidId(_("The parameter %(name)s is not a valid id.") % {"name": ", ".join(bad)}, details=bad)
    return out


def page_filter_ids(request, *names: str) -> dict[str, int | None] | None:
    """The id filters of a list page, or None when one is not an id: then the page lists
    nothing and a message names the filter (the pair list does the same for any bad filter)."""
    from django.contrib import messages

    try:
        return id_params(request.GET, *names)
    except InvalidId as exc:
        messages.error(request, _("The filter %(name)s is not a valid id, so nothing is listed.") % {"name": ", ".join(exc.details)})
        return None


def prefill_id(params: Mapping, name: str) -> int | None:
    """An id that only preselects something: None when absent or not an id."""
    return parse_id(params.get(name))


# --------------------------------------------------------------------------- forms and filter sets


class IdField(forms.IntegerField):
    """A form field for an id (filter sets, forms): the same rule as ``parse_id``."""

    default_error_messages = {"invalid": gettext_lazy("Not a valid id: give a whole number from 1 to %(max)s.")}

    def to_python(self, value):
        if value in EMPTY_VALUES or (isinstance(value, str) and not value.strip()):
            return None
        number = parse_id(value)
        if number is None:
            raise ValidationError(self.error_messages["invalid"], code="invalid", params={"max": MAX_ID})
        return number


class IdFilter(django_filters.NumberFilter):
    """``NumberFilter`` for an id: a ``DecimalField`` took "1e309" and 2**64 to the database."""

    field_class = IdField


class ModelIdChoiceField(django_filters.fields.ModelChoiceField):
    """django-filter's ``ModelChoiceField`` refusing a value that is not an id before any query."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if self.null_label is not None and value == self.null_value:
            return super().to_python(value)
        by_pk = self.to_field_name in (None, "pk", "id")
        if by_pk and isinstance(value, (str, int)) and parse_id(value) is None:
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class ModelIdChoiceFilter(django_filters.ModelChoiceFilter):
    """``ModelChoiceFilter`` whose value must be an id (see ``parse_id``)."""

    field_class = ModelIdChoiceField
