"""Django admin: every curation model and the audit log load for a superuser; the records of
what happened are read-only; the admin is closed to everyone else."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from curation.models import (
    Comment,
    DatasetItem,
    DatasetVersion,
    Department,
    ImportBatch,
    QAPair,
    QAPairRevision,
    Review,
    Tag,
)
from medportal.audit import audit_record
from medportal.models import AuditEvent

EDITABLE = {Department, Tag}
READ_ONLY = {ImportBatch, QAPair, QAPairRevision, Review, Comment, DatasetVersion, DatasetItem, AuditEvent}



@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", "pw")


@pytest.fixture
def one_of_each(make_pair, curator, clinician):
    dept = Department.objects.create(name="心内科")
    dept.reviewers.add(clinician)
    tag = Tag.objects.create(name="罕见病")
    batch = ImportBatch.objects.create(created_by=curator, filename="qa.csv", format="csv")
    pair = make_pair(curator, department="心内科", tags=["罕见病"], import_batch=batch, status=QAPair.Status.APPROVED)
    review_ = Review.objects.create(qa_pair=pair, reviewer=clinician, decision="approve", round=1)
    comment = Comment.objects.create(qa_pair=pair, author=clinician, body="好")
    version = DatasetVersion.objects.create(
        name="v1", created_by=curator, split_ratios=[0.8, 0.1, 0.1], content_hash="abc", counts={"train": 1}
    )
    item = DatasetItem.objects.create(version=version, qa_pair=pair, split="train", position=0, content={"instruction": "q"})
    event = audit_record(actor=curator, action="qa_pair.edit", target=pair, summary="edited")
    return {
        Department: dept,
        Tag: tag,
        ImportBatch: batch,
        QAPair: pair,
        QAPairRevision: pair.revisions.get(),
        Review: review_,
        Comment: comment,
        DatasetVersion: version,
        DatasetItem: item,
        AuditEvent: event,
    }


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_curation_model_and_the_audit_log_are_registered():
    assert EDITABLE | READ_ONLY <= set(admin.site._registry)


@pytest.mark.parametrize("model", sorted(EDITABLE | READ_ONLY, key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_changelist_search_and_change_pages_load_for_a_superuser(client, superuser, one_of_each, model):
    client.force_login(superuser)
    changelist = client.get(_url(model, "changelist"))
    assert changelist.status_code == 200
    assert client.get(_url(model, "changelist"), {"q": "心"}).status_code == 200
    obj = one_of_each[model]
    change = client.get(_url(model, "change", obj.pk))
    assert change.status_code == 200
    add = client.get(_url(model, "add"))
    assert add.status_code == (200 if model in EDITABLE else 403)


@pytest.mark.parametrize("model", sorted(READ_ONLY, key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_records_are_read_only_in_the_admin(client, superuser, one_of_each, model):
    client.force_login(superuser)
    obj = one_of_each[model]
    page = client.get(_url(model, "change", obj.pk))
    assert b'name="_save"' not in page.content
    assert client.post(_url(model, "change", obj.pk), {}).status_code == 403
    assert client.get(_url(model, "delete", obj.pk)).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_list_filters_work(client, superuser, one_of_each):
    client.force_login(superuser)
    assert client.get(_url(QAPair, "changelist"), {"status__exact": "approved"}).status_code == 200
    assert client.get(_url(Review, "changelist"), {"decision__exact": "approve"}).status_code == 200
    assert client.get(_url(AuditEvent, "changelist"), {"action": "qa_pair.edit"}).status_code == 200


def test_a_superuser_assigns_department_reviewers(client, superuser, one_of_each, clinician2):
    client.force_login(superuser)
    dept = one_of_each[Department]
    response = client.post(_url(Department, "change", dept.pk), {"name": "心血管内科", "reviewers": [clinician2.pk]})
    assert response.status_code == 302
    dept.refresh_from_db()
    assert dept.name == "心血管内科"
    assert list(dept.reviewers.values_list("username", flat=True)) == ["clinician2"]


def test_the_pair_admin_links_to_the_app(client, superuser, one_of_each):
    client.force_login(superuser)
    pair = one_of_each[QAPair]
    html = client.get(_url(QAPair, "change", pair.pk)).content.decode()
    assert reverse("curation:pair-detail", args=[pair.pk]) in html


def test_the_admin_is_closed_to_non_staff(client, admin_user):
    client.force_login(admin_user)  # MedPortal admin role, but not Django staff
    response = client.get(_url(QAPair, "changelist"))
    assert response.status_code == 302
