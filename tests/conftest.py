"""Shared fixtures: the three personas plus an outsider, and a QA-pair factory.

Personas follow healthchecks' BaseTestCase: every view test can check the owner, another
role and a user with no role at all.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

# Under pytest-xdist each worker gets one torch thread: two workers with two threads each on a
# 2-core machine spend their time contending. Set before torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _test_settings(request):
    """English messages, fast password hashing, and static files served by the finders: tests never run
    collectstatic, so the production manifest storage has no manifest to read.

    Django-free test modules may run with ``-p no:django``; then there is nothing to set."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Tests assert English messages; tests of the Chinese UI set zh-hans themselves.
    settings.LANGUAGE_CODE = "en"
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    from django.utils import translation

    with translation.override("en"):
        yield


def _user(django_user_model, username: str, *roles: str):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password="pw-" + username, email=f"{username}@example.org")
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def curator(db, django_user_model):
    return _user(django_user_model, "curator", "curator")


@pytest.fixture
def curator2(db, django_user_model):
    return _user(django_user_model, "curator2", "curator")


@pytest.fixture
def clinician(db, django_user_model):
    return _user(django_user_model, "clinician", "clinician")


@pytest.fixture
def clinician2(db, django_user_model):
    return _user(django_user_model, "clinician2", "clinician")


@pytest.fixture
def admin_user(db, django_user_model):
    return _user(django_user_model, "boss", "admin")


@pytest.fixture
def outsider(db, django_user_model):
    """Logged in, but holds no MedPortal role."""
    return _user(django_user_model, "outsider")


@pytest.fixture
def make_pair(db):
    """Create a QA pair through the real derive path. Text is unique unless given."""
    from curation.models import QAPair
    from curation.services.core import (
        department_get_or_create,
        pair_apply_derived,
        revision_record,
        tags_get_or_create,
    )

    def make(author, *, instruction=None, output=None, status=QAPair.Status.DRAFT, department="", tags=(), **fields):
        n = next(_counter)
        pair = QAPair(
            author=author,
            instruction=instruction if instruction is not None else f"测试问题 {n}：高血压患者可以吃党参吗？第{n}号",
            output=output if output is not None else f"回答 {n}：一般可以，但请在医生指导下使用。编号{n}",
            status=status,
            department=department_get_or_create(department) if department else None,
            **fields,
        )
        pair_apply_derived(pair)
        pair.save()
        if tags:
            pair.tags.set(tags_get_or_create(tags))
        revision_record(pair=pair, editor=author, note="created")
        return pair

    return make


@pytest.fixture
def shared_datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS
