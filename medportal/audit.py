"""Audit log service: every state change and edit goes through ``audit_record``."""

from __future__ import annotations

from collections.abc import Iterable

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
