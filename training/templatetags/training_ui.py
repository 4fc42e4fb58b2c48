"""Small formatting filters of the training pages: parameter counts, durations, losses."""

from __future__ import annotations

from django import template
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def params(value) -> str:
    """1234567 → "1.2M", 596049920 → "596M", 7615616512 → "7.6B"."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "—"
    if n <= 0:
        return "—"
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            scaled = n / size
            return f"{scaled:.1f}{unit}" if scaled < 100 else f"{scaled:.0f}{unit}"
    return f"{n:.0f}"


@register.filter
def duration(value) -> str:
    """Seconds → "42 s", "3 min 05 s", "2 h 07 min", "1 d 3 h"; empty for None."""
    if value is None or value == "":
        return ""
    try:
        s = round(float(value))
    except (TypeError, ValueError):
        return ""
    if s < 60:
        return _("%(s)d s") % {"s": s}
    m, s = divmod(s, 60)
    if m < 60:
        return _("%(m)d min %(s)02d s") % {"m": m, "s": s}
    h, m = divmod(m, 60)
    if h < 24:
        return _("%(h)d h %(m)02d min") % {"h": h, "m": m}
    d, h = divmod(h, 24)
    return _("%(d)d d %(h)d h") % {"d": d, "h": h}


@register.filter
def loss(value) -> str:
    """A loss with four decimals; "—" when unknown."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def lr(value) -> str:
    """A learning rate in scientific notation (2.0e-04); "—" when unknown."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.2e}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def percent(value) -> int:
    """A 0..1 progress → an integer percentage for progress bars."""
    try:
        return max(0, min(100, int(float(value) * 100)))
    except (TypeError, ValueError):
        return 0


@register.filter
def setting(value) -> str:
    """A config value as the command line writes it (none / true / false)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
