"""Reviewing at speed: record-and-next through the queue or a filtered list, the next pair
prefetched, bulk actions over every pair matching a filter (with a confirmation) that keep
the selection when refused, highlighted and relevance-sorted search, per-department queue
counts that hide no pair, difficulty labels in either language, and stored words shown in
the reader's language."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from curation import selectors
from curation.models import Department, QAPair
from curation.services import editing, review

S = QAPair.Status
LIST = "/curation/pairs/"
QUEUE = "/curation/review/"
BULK = "/curation/pairs/bulk/"
ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


def waiting(make_pair, author, *, minutes_ago=0, department="", **fields):
    return make_pair(
        author,
        status=S.IN_REVIEW,
        review_round=1,
        submitted_at=timezone.now() - timedelta(minutes=minutes_ago),
        department=department,
        **fields,
    )


def detail(pk, next_url, pos):
    return f"/curation/pairs/{pk}/?next={quote(next_url, safe='')}&pos={pos}"


def _review(client, pair, decision="approve", comment="", *, next_url, pos, and_next=True):
    data = {"decision": decision, "comment": comment, "version": pair.version, "next": next_url, "pos": pos}
    if and_next:
        data["and_next"] = "1"
    return client.post(reverse("curation:pair-review", args=[pair.pk]), data)


# --- 1. record and next, prefetch, shortcuts -------------------------------------------------


def test_record_and_next_walks_the_queue_in_its_order(client, make_pair, curator, clinician):
    first = waiting(make_pair, curator, minutes_ago=30)
    second = waiting(make_pair, curator, minutes_ago=20)
    third = waiting(make_pair, curator, minutes_ago=10)
    client.force_login(clinician)
    queue_html = client.get(QUEUE).content.decode()
    assert f'href="/curation/pairs/{first.pk}/?next=/curation/review/&amp;pos=0"' in queue_html

    response = _review(client, first, next_url=QUEUE, pos=0)
    # The reviewed pair left the queue: the next one now sits where it was.
    assert response.status_code == 302
    assert response["Location"] == detail(second.pk, QUEUE, 0)
    response = _review(client, second, "request_changes", "请补充剂量", next_url=QUEUE, pos=0)
    assert response["Location"] == detail(third.pk, QUEUE, 0)
    response = _review(client, third, "reject", "答非所问", next_url=QUEUE, pos=0)
    assert response["Location"] == QUEUE  # the queue is done
    assert [str(m) for m in response.wsgi_request._messages][-1] == "That was the last pair of this list."
    assert [p.status for p in QAPair.objects.order_by("pk")] == [S.APPROVED, S.CHANGES_REQUESTED, S.REJECTED]


def test_record_and_next_follows_a_filtered_and_sorted_list(client, make_pair, curator, clinician):
    a = waiting(make_pair, curator, department="儿科")
    make_pair(curator, department="心内科", status=S.IN_REVIEW, review_round=1)  # filtered out
    b = waiting(make_pair, curator, department="儿科")
    c = waiting(make_pair, curator, department="儿科")
    dept = Department.objects.get(name="儿科").pk
    listing = f"{LIST}?department={dept}&sort=id"
    client.force_login(clinician)
    # Approved pairs stay in this list (no status filter): the next one is one further on.
    response = _review(client, a, next_url=listing, pos=0)
    assert response["Location"] == detail(b.pk, listing, 1)
    response = _review(client, b, next_url=listing, pos=1)
    assert response["Location"] == detail(c.pk, listing, 2)


def test_the_plain_record_button_stays_on_the_pair_or_goes_back(client, make_pair, curator, clinician):
    pair = waiting(make_pair, curator)
    client.force_login(clinician)
    response = _review(client, pair, next_url=QUEUE, pos=0, and_next=False)
    assert response["Location"] == QUEUE


def test_the_pair_page_prefetches_the_next_pair_and_links_both_neighbours(client, make_pair, curator, clinician):
    pairs = [waiting(make_pair, curator, minutes_ago=30 - i) for i in range(3)]
    client.force_login(clinician)
    html = client.get(detail(pairs[1].pk, QUEUE, 1)).content.decode()
    next_url = detail(pairs[2].pk, QUEUE, 2).replace("&", "&amp;")
    assert f'<link rel="prefetch" href="{next_url}">' in html
    assert f'href="{next_url}" data-shortcut="next"' in html
    assert f'href="{detail(pairs[0].pk, QUEUE, 0).replace("&", "&amp;")}" data-shortcut="previous"' in html
    assert 'data-shortcut="submit-next"' in html
    assert 'id="shortcut-help"' in html and "/static/medportal/review.js" in html
    # The last pair has no next one to prefetch.
    last = client.get(detail(pairs[2].pk, QUEUE, 2)).content.decode()
    assert 'rel="prefetch"' not in last and 'data-shortcut="next"' not in last


def test_the_neighbours_of_a_pair_that_left_the_list(make_pair, curator, clinician):
    a, b, c = (waiting(make_pair, curator, minutes_ago=30 - i) for i in range(3))
    qs = selectors.review_queue(user=clinician)
    n = selectors.queue_neighbours(qs, pk=b.pk, position=1)
    assert (n.previous, n.next, n.position) == ((a.pk, 0), (c.pk, 2), 1)
    review.qa_pair_approve(pair=b, reviewer=clinician, version=b.version)
    n = selectors.queue_neighbours(selectors.review_queue(user=clinician), pk=b.pk, position=1)
    assert (n.previous, n.next, n.position) == ((a.pk, 0), (c.pk, 1), 1)


def test_pages_of_this_area_carry_no_inline_script(client, make_pair, curator, clinician):
    pair = waiting(make_pair, curator)
    client.force_login(curator)
    for url in (LIST, detail(pair.pk, LIST, 0)):
        html = client.get(url).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert " onclick=" not in html, url


# --- 2. bulk over every matching pair; refusals keep the selection ---------------------------


def _bulk_all(client, next_url, action, value, **extra):
    data = {"action": action, "value": value, "all_matching": "1", "next": next_url, **extra}
    return client.post(BULK, data)


def test_bulk_over_every_matching_pair_asks_first_then_applies(client, make_pair, curator):
    matching = [make_pair(curator, department="急诊科") for _ in range(55)]  # more than one page of 50
    other = make_pair(curator, department="儿科")
    dept = Department.objects.get(name="急诊科").pk
    listing = f"{LIST}?department={dept}"
    client.force_login(curator)
    page = client.get(listing).content.decode()
    assert "Select all 55 pairs matching the filter" in page

    asked = _bulk_all(client, listing, "tag", "待核")
    assert asked.status_code == 200
    html = asked.content.decode()
    assert 'id="bulk-confirm"' in html and "Yes, apply to 55 pairs" in html
    assert 'name="expected" value="55"' in html
    assert not QAPair.objects.filter(tags__name="待核").exists()  # nothing before the confirmation

    done = _bulk_all(client, listing, "tag", "待核", expected="55", confirmed="1")
    assert done.status_code == 302 and done["Location"] == listing
    tagged = set(QAPair.objects.filter(tags__name="待核").values_list("pk", flat=True))
    assert tagged == {p.pk for p in matching}
    assert other.pk not in tagged


def test_a_confirmed_count_that_no_longer_holds_is_refused_and_the_choice_kept(client, make_pair, curator):
    for _ in range(3):
        make_pair(curator, department="急诊科")
    dept = Department.objects.get(name="急诊科").pk
    listing = f"{LIST}?department={dept}"
    client.force_login(curator)
    response = _bulk_all(client, listing, "department", "神经内科", expected="2", confirmed="1")
    assert response.status_code == 400
    html = response.content.decode()
    assert "The filter now matches 3 pairs, not the 2 you confirmed" in html
    assert re.search(r'id="bulk-all-matching"[^>]* checked', html)
    assert not QAPair.objects.filter(department__name="神经内科").exists()
    # The list is still the filtered one.
    assert len(response.context["page"].object_list) == 3


def test_a_refused_bulk_action_keeps_the_ticked_rows_and_the_filter(client, make_pair, curator):
    a, b, c = make_pair(curator, department="急诊科"), make_pair(curator, department="急诊科"), make_pair(curator)
    dept = Department.objects.get(name="急诊科").pk
    listing = f"{LIST}?department={dept}"
    client.force_login(curator)
    data = {"action": "difficulty", "value": "extreme", "ids": [a.pk, b.pk], "next": listing, f"v{a.pk}": 1, f"v{b.pk}": 1}
    response = client.post(BULK, data)
    assert response.status_code == 400
    html = response.content.decode()
    assert "Choose a difficulty" in html
    for p in (a, b):
        assert re.search(rf'name="ids" value="{p.pk}"[^>]* checked', html)
    assert not re.search(rf'name="ids" value="{c.pk}"', html)  # c is not in the filtered list
    assert not re.search(r'id="bulk-all-matching"[^>]* checked', html)


def test_a_conflicting_bulk_action_keeps_the_ticked_rows(client, make_pair, curator):
    a, b = make_pair(curator), make_pair(curator)
    client.force_login(curator)
    data = {"action": "department", "value": "急诊科", "ids": [a.pk, b.pk], "next": LIST, f"v{a.pk}": 1, f"v{b.pk}": 0}
    response = client.post(BULK, data)
    assert response.status_code == 409
    html = response.content.decode()
    assert "changed by" in html
    assert all(re.search(rf'name="ids" value="{p.pk}"[^>]* checked', html) for p in (a, b))


# --- 3. search: highlighted, escaped, by relevance -------------------------------------------


def test_match_spans_mark_cjk_runs_and_word_starts():
    from curation.lib.search import match_spans

    assert match_spans("高血压患者", ["高血", "血压"]) == [(0, 3)]
    assert match_spans("Hypertension and hyper", ["hyperten"]) == [(0, 8)]
    assert match_spans("nonhypertension", ["hyperten"]) == []


def test_search_results_highlight_the_terms_and_escape_everything(client, make_pair, curator, clinician):
    make_pair(curator, instruction="<script>alert(1)</script> 高血压 <b>可以</b>吃党参吗？")
    client.force_login(clinician)
    response = client.get(LIST, {"q": "<img src=x onerror=alert(1)> 高血压"})
    html = response.content.decode()
    assert len(response.context["page"].object_list) == 0  # every token must match: "img" does not
    response = client.get(LIST, {"q": "高血压 script"})
    html = response.content.decode()
    row = re.search(r'data-question href="[^"]*">(.*?)</a>', html).group(1)
    assert row == (
        '&lt;<mark class="search-hit">script</mark>&gt;alert(1)&lt;/<mark class="search-hit">script</mark>&gt; '
        '<mark class="search-hit">高血压</mark> &lt;b&gt;可以&lt;/b&gt;吃党参吗？'
    )
    assert "<script>alert" not in html and "<b>可以" not in html


def test_a_long_question_shows_the_part_around_the_match(client, make_pair, curator, clinician):
    make_pair(curator, instruction="前情" * 80 + "党参" + "后续" * 40)
    client.force_login(clinician)
    html = client.get(LIST, {"q": "党参"}).content.decode()
    row = re.search(r'data-question href="[^"]*">(.*?)</a>', html).group(1)
    assert row.startswith("…") and row.endswith("…") and '<mark class="search-hit">党参</mark>' in row


def test_search_sorts_by_relevance_on_request(client, make_pair, curator, clinician):
    in_question = make_pair(curator, instruction="党参能降血压吗？", output="不能，请遵医嘱。")
    in_answer = make_pair(curator, instruction="高血压能吃什么中药？", output="党参需谨慎。")
    in_both = make_pair(curator, instruction="党参和黄芪一起吃？", output="党参黄芪可同用。")
    filters = {"q": "党参"}
    newest = [p.pk for p in selectors.qa_pair_list(user=clinician, filters=filters)]
    assert newest == [in_both.pk, in_answer.pk, in_question.pk]
    ranked = [p.pk for p in selectors.qa_pair_list(user=clinician, filters={**filters, "sort": "relevance"})]
    assert ranked == [in_both.pk, in_question.pk, in_answer.pk]
    client.force_login(clinician)
    page = client.get(LIST, {**filters, "sort": "relevance"})
    assert [p.pk for p in page.context["page"]] == ranked
    assert '<option value="relevance" selected>Relevance</option>' in page.content.decode()
    api = client.get("/api/v1/pairs/", {**filters, "sort": "relevance"}).json()
    assert [r["id"] for r in api["results"]] == ranked


# --- 4. the queue hides no pair; counts per department ---------------------------------------


def test_a_generated_rare_case_is_in_a_clinicians_default_queue(client, tmp_path, curator, clinician, clinician2, make_pair):
    from curation.services.rare import rare_cases_generate
    from tests.curation.rare_data import import_tiny

    import_tiny(tmp_path)
    cardio = waiting(make_pair, curator, department="心内科")
    Department.objects.get(name="心内科").reviewers.add(clinician)
    result = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, lang="zh", task="diagnosis", seed=7)
    assert result.created == 2
    client.force_login(clinician)
    response = client.get(QUEUE)
    shown = [p.pk for p in response.context["page"]]
    assert set(result.qa_pair_ids) <= set(shown) and cardio.pk in shown
    html = response.content.decode()
    assert 'data-department="罕见病" data-count="2"' in html
    assert 'data-department="心内科" data-count="1"' in html
    # Once a clinician covers the department, it is theirs: no longer in everyone's queue.
    Department.objects.get(name="罕见病").reviewers.add(clinician2)
    assert [p.pk for p in selectors.review_queue(user=clinician)] == [cardio.pk]
    assert set(result.qa_pair_ids) <= {p.pk for p in selectors.review_queue(user=clinician2)}


def test_the_queue_narrows_to_one_department(client, make_pair, curator, clinician):
    peds = waiting(make_pair, curator, department="儿科")
    waiting(make_pair, curator, department="心内科")
    client.force_login(clinician)
    response = client.get(QUEUE, {"department": Department.objects.get(name="儿科").pk})
    assert [p.pk for p in response.context["page"]] == [peds.pk]


# --- 5. bulk difficulty in either language ---------------------------------------------------


@pytest.mark.parametrize(("lang", "label", "code"), [("zh-hans", "困难", "hard"), ("zh-hans", "简单", "easy"), ("en", "Medium", "medium"), ("en", "hard", "hard")])
def test_bulk_difficulty_takes_the_labels_the_ui_shows(client, make_pair, curator, lang, label, code):
    pair = make_pair(curator)
    client.force_login(curator)
    page = client.get(LIST, HTTP_ACCEPT_LANGUAGE=lang).content.decode()
    assert f'<option value="{label.capitalize() if lang == "en" else label}">' in page  # what the datalist offers
    data = {"action": "difficulty", "value": label, "ids": [pair.pk], "next": LIST, f"v{pair.pk}": pair.version}
    response = client.post(BULK, data, HTTP_ACCEPT_LANGUAGE=lang)
    assert response.status_code == 302
    pair.refresh_from_db()
    assert pair.difficulty == code


# --- 6. stored words in the reader's language; no raw dicts ----------------------------------


def test_events_revisions_and_labels_read_in_the_readers_language(client, make_pair, curator, clinician):
    pair = make_pair(curator, extra={"来源科室": "心内科", "score": 3, "refs": ["a", "b"]})
    with translation.override("zh-hans"):  # the writer works in Chinese
        editing.qa_pair_update(pair=pair, editor=curator, version=pair.version, difficulty="medium")
    pair.refresh_from_db()
    with translation.override("zh-hans"):
        review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    client.force_login(clinician)

    en = client.get(f"/curation/pairs/{pair.pk}/").content.decode()
    events = en[en.index('id="events"') :]
    assert "Edited" in events and "Submitted for review" in events and "Draft → In review" in events
    assert "qa_pair.edit" not in events.replace('data-action="qa_pair.edit"', "")
    assert "已编辑" not in en and "编辑" not in events
    revisions = en[en.index('id="revisions"') : en.index('id="events"')]
    assert "<em data-note>edited</em>" in revisions and "Medium" in revisions and ">medium<" not in revisions

    zh = client.get(f"/curation/pairs/{pair.pk}/", **ZH).content.decode()
    events = zh[zh.index('id="events"') :]
    with translation.override("zh-hans"):
        assert str(selectors.EVENT_LABELS["qa_pair.edit"]) in events
        assert str(QAPair.Difficulty.MEDIUM.label) in zh
        assert "<em data-note>已编辑</em>" in zh[zh.index('id="revisions"') :]

    # Extra fields: a key/value table, never a Python dict.
    assert "{'" not in en and "{&#x27;" not in en
    table = re.search(r'id="extra-fields">(.*?)</table>', en, re.S).group(1)
    assert "<th scope=\"row\" class=\"fw-normal text-muted text-break\">来源科室</th><td class=\"text-break\">心内科</td>" in table
    assert "[&quot;a&quot;, &quot;b&quot;]" in table


def test_an_imported_note_reads_in_the_readers_language(client, make_pair, curator, clinician):
    from curation.models import QAPairRevision

    pair = make_pair(curator)
    QAPairRevision.objects.filter(qa_pair=pair).update(note="imported")
    client.force_login(clinician)
    zh = client.get(f"/curation/pairs/{pair.pk}/", **ZH).content.decode()
    assert "<em data-note>导入</em>" in zh
    en = client.get(f"/curation/pairs/{pair.pk}/").content.decode()
    assert "<em data-note>imported</em>" in en


def test_every_revision_note_medportal_writes_reads_in_the_readers_language(client, curator, clinician):
    """Created and masked-before-freezing too, not only edited and imported: each stored in
    the writer's language, each shown in the reader's ("created" reads 新建, not 创建时间)."""
    with translation.override("zh-hans"):
        pair = editing.qa_pair_create(author=curator, instruction="手机 13800138000，头痛怎么办？", output="休息。")
        assert editing.qa_pairs_mask_identifiers(editor=curator, pair_ids=[pair.pk]) == [pair.pk]
    client.force_login(clinician)
    notes = {}
    for lang, headers in (("en", {}), ("zh", ZH)):
        html = client.get(f"/curation/pairs/{pair.pk}/", **headers).content.decode()
        notes[lang] = re.findall(r"<em data-note>(.*?)</em>", html[html.index('id="revisions"') : html.index('id="events"')])
    assert sorted(notes["en"]) == ["created", "masked identifiers before freezing"]
    assert sorted(notes["zh"]) == sorted(["新建", "冻结前脱敏个人标识信息"])


def test_the_generator_of_a_synthetic_pair_is_a_key_value_table(client, make_pair, curator, clinician):
    meta = {"generator": "rare-cases/2", "seed": 7, "diseases": ["ORPHA:1"], "hpo": {"version": "2099-01-01"}}
    pair = make_pair(curator, synthetic=True, synthetic_meta=meta)
    client.force_login(clinician)
    html = client.get(f"/curation/pairs/{pair.pk}/").content.decode()
    table = re.search(r'id="generator-fields">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<th[^>]*>(.*?)</th><td[^>]*>(.*?)</td>", table)
    assert rows == [
        ("generator", "rare-cases/2"),
        ("diseases", "[&quot;ORPHA:1&quot;]"),
        ("hpo", "{&quot;version&quot;: &quot;2099-01-01&quot;}"),
        ("seed", "7"),
    ]
    assert "{&#x27;" not in html and "{'" not in html


def test_key_value_rows_come_in_one_order_whatever_order_the_database_keeps():
    """PostgreSQL's jsonb keeps keys sorted by length, SQLite as written: the table must not
    depend on it. The generator's name leads, the rest is alphabetical."""
    from curation.selectors import key_values

    meta = {"seed": 7, "generator": "rare-cases/2", "hpo_version": "x", "diseases": ["ORPHA:1"], "age_years": 3}
    reordered = dict(reversed(list(meta.items())))
    assert key_values(meta) == key_values(reordered)
    assert [k for k, _ in key_values(reordered, first=("generator",))] == ["generator", "age_years", "diseases", "hpo_version", "seed"]


def test_the_case_generation_job_page_counts_new_pairs_as_xinjian(client, curator):
    from curation.models_rare import GenerationJob

    job = GenerationJob.objects.create(created_by=curator, status="succeeded", total=3, done=3, created_count=2, duplicate_count=1)
    client.force_login(curator)
    html = client.get(reverse("curation:rare-job", args=[job.pk]), **ZH).content.decode()
    card = re.search(r"<div class=\"small text-muted\">([^<]*)</div><div class=\"fs-4 fw-semibold\" data-count=\"created\">2<", html)
    assert card and card.group(1) == "新建"
    assert "创建时间" not in html
