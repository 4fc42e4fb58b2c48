"""In Chromium: a curator imports a TRL preference file; a clinician confirms a pair; the curator
freezes a preference version and sees its downloads. No Content-Security-Policy violation."""

from __future__ import annotations

import json

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROWS = [{"prompt": f"问题{n}：胸闷气短怎么办？", "chosen": f"及时就医，做心电图检查。{n}", "rejected": f"忍一忍就好。{n}"} for n in range(8)]


def test_import_confirm_and_freeze_preference_pairs(browser, live_server, curator, clinician, tmp_path):
    from curation.models_pref import PreferencePair, PreferenceVersion

    upload = tmp_path / "偏好.jsonl"
    upload.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    violations: list[str] = []

    def context():
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
        ctx.set_default_timeout(15_000)
        page = ctx.new_page()
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        return ctx, page

    ctx, page = context()
    login(page, live_server, "curator", "pw-curator")
    page.goto(f"{live_server.url}/curation/preferences/import/")
    page.set_input_files("#preference-import-form input[name=file]", str(upload))
    page.check("#pref-submit")
    page.click("#preference-import-form button[type=submit]")
    page.wait_for_url("**/curation/preferences/imports/*/")
    assert page.locator("[data-count=created]").inner_text().strip() == "8"
    ctx.close()

    ctx, page = context()
    login(page, live_server, "clinician", "pw-clinician")
    page.goto(f"{live_server.url}/curation/preferences/?status=in_review")
    assert page.locator("#preference-table tbody tr").count() == 8
    for pair in PreferencePair.objects.all():
        page.goto(f"{live_server.url}/curation/preferences/{pair.pk}/")
        assert page.locator("#pair-chosen").inner_text().startswith("及时就医")
        page.click("#preference-review-form button[value=approve]")
        page.wait_for_load_state("networkidle")
    assert set(PreferencePair.objects.values_list("status", flat=True)) == {"approved"}
    ctx.close()

    ctx, page = context()
    login(page, live_server, "curator", "pw-curator")
    page.goto(f"{live_server.url}/curation/preferences/versions/")
    page.fill("#pv-name", "偏好 v1")
    page.click("#preference-freeze-form button[type=submit]")
    page.wait_for_url("**/curation/preferences/versions/*/")
    version = PreferenceVersion.objects.get()
    assert page.locator("#version-counts").inner_text().replace(" ", "") == "/".join(str(version.counts[s]) for s in ("train", "validation", "test"))
    assert page.locator("a[data-format=llamafactory]").count() == 1
    ctx.close()
    assert violations == []
