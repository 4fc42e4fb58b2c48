"""Number formats of the evaluation pages: metrics with four decimals as LLaMA-Factory prints
them, signed deltas, milliseconds and rates. Each returns "—" for an unknown value."""

from __future__ import annotations

from django import template

register = template.Library()

DASH = "—"


def _number(value) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register.filter
def metric(value) -> str:
    """A BLEU / ROUGE score (0..100) with four decimals: 12.3456."""
    n = _number(value)
    return DASH if n is None else f"{n:.4f}"


@register.filter
def delta(value) -> str:
    """A signed difference with four decimals: +1.2345, −0.5000 (a real minus sign), ±0.0000."""
    n = _number(value)
    if n is None:
        return DASH
    text = f"{abs(n):.4f}"
    if text == "0.0000":
        return "±0.0000"
    return ("+" if n > 0 else "\u2212") + text


@register.filter
def delta_class(value) -> str:
    """Bootstrap text colour of a delta: green when better, red when worse, grey otherwise."""
    n = _number(value)
    if n is None or round(n, 4) == 0:
        return "text-secondary"
    return "text-success" if n > 0 else "text-danger"


@register.filter
def delta_icon(value) -> str:
    """Bootstrap-icons name of a delta's arrow."""
    n = _number(value)
    if n is None or round(n, 4) == 0:
        return "bi-dash"
    return "bi-arrow-up" if n > 0 else "bi-arrow-down"


@register.filter
def ms(value) -> str:
    """Milliseconds, whole: 1234 ms; seconds above ten thousand: 12.3 s."""
    n = _number(value)
    if n is None:
        return DASH
    return f"{n / 1000:.1f} s" if n >= 10_000 else f"{n:.0f} ms"


@register.filter
def rate(value) -> str:
    """A throughput with one decimal (tokens/s, samples/s)."""
    n = _number(value)
    return DASH if n is None else f"{n:.1f}"


@register.filter
def get(mapping, key):
    """``mapping[key]`` for dicts whose keys have dashes (``summary|get:"rouge-l"``)."""
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None
