"""The user the curation commands act as (--as-user): the named one, else the first active superuser."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from curation.management.common import command_user


def test_a_named_user_is_that_user(curator):
    assert command_user("curator") == curator


def test_an_unknown_name_is_a_command_error(db):
    with pytest.raises(CommandError, match="Unknown user 'nobody'."):
        command_user("nobody")


def test_no_name_means_the_first_active_superuser(django_user_model):
    django_user_model.objects.create_superuser("gone", "gone@example.org", "pw", is_active=False)
    first = django_user_model.objects.create_superuser("first", "first@example.org", "pw")
    django_user_model.objects.create_superuser("second", "second@example.org", "pw")
    assert command_user(None) == first


@pytest.mark.parametrize(
    ("command", "args", "action"),
    [
        ("import_qa", ["{file}"], "import"),
        ("import_documents", ["{file}"], "import"),
        ("fetch_pubmed", ["--query", "fever", "--email", "a@example.org"], "import"),
        ("generate_rare_cases", ["--disease", "ORPHA:1"], "generate"),
    ],
)
def test_every_command_says_there_is_no_user_to_act_as(db, curator, tmp_path, command, args, action):
    """Only a curator exists: nothing is read or fetched before the command finds nobody to act as."""
    path = tmp_path / "in.txt"
    path.write_text("question\n", encoding="utf-8")
    with pytest.raises(CommandError, match=f"No user to {action} as: create a superuser"):
        call_command(command, *[a.format(file=path) for a in args])
