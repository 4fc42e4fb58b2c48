"""Audit log service: every state change and edit goes through ``audit_record``.

Events hold who, what and when, kinds and counts: never the text of a QA pair or a comment
(which may hold personal identifiers). ``audit_scrub`` rewrites the text of older events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import models

from .models import AuditEvent


def _target(obj: models.Model) -> tuple[str, str]:
    return obj._meta.label_lower, str(obj.pk)


def audit_record(*, actor, action: str, target: models.Model, summary: str = "", changes: dict | None = None) -> AuditEvent:
    target_type, target_id = _target(target)
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        summary=summary[:500],
        changes=changes or {},
    )


def audit_record_many(*, actor, action: str, targets: Iterable[models.Model], summary: str = "", changes: dict | None = None) -> int:
    rows = []
    for t in targets:
        target_type, target_id = _target(t)
        rows.append(
            AuditEvent(
                actor=actor if getattr(actor, "is_authenticated", False) else None,
                action=action,
                target_type=target_type,
                target_id=target_id,
                summary=summary[:500],
                changes=changes or {},
            )
        )
    AuditEvent.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def audit_events_for(obj: models.Model):
    target_type, target_id = _target(obj)
    return AuditEvent.objects.filter(target_type=target_type, target_id=target_id).select_related("actor")


def _scrub_value(value, scrub: Callable[[str], str]):
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_value(v, scrub) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, scrub) for k, v in value.items()}
    return value


def audit_scrub(*, target: models.Model, scrub: Callable[[str], str]) -> int:
    """Rewrite the text of ``target``'s events (summary and every string in ``changes``) with
    ``scrub``, e.g. the identifier masker: masking a pair must not leave the identifiers in
    events recorded before. Kinds, counts, actors and times stay. Returns the events changed."""
    changed = []
    for event in audit_events_for(target):
        summary = scrub(event.summary)[:500]
        changes = _scrub_value(event.changes, scrub)
        if summary != event.summary or changes != event.changes:
            event.summary, event.changes = summary, changes
            changed.append(event)
    AuditEvent.objects.bulk_update(changed, ["summary", "changes"], batch_size=500)
    return len(changed)
