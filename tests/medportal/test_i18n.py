"""The Simplified Chinese catalog and the bilingual UI.

zh-hans is the default language; English is one POST to /i18n/setlang/ away and sticks for
the rest of the visit. The catalog tests read locale/zh_Hans/LC_MESSAGES/django.po with the
small parser below (polib is not a dependency) and the committed django.mo with the standard
library's ``gettext``, so they also run on CI machines without GNU gettext.
"""

from __future__ import annotations

import ast
import gettext as stdlib_gettext
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils.translation.template import templatize

ROOT = Path(settings.BASE_DIR)
LC_MESSAGES = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
PO_FILE = LC_MESSAGES / "django.po"
MO_FILE = LC_MESSAGES / "django.mo"
CTX = "\x04"  # gettext's separator between context and msgid
HOW_TO_FIX = "run `make messages`, translate the new entries in locale/zh_Hans/LC_MESSAGES/django.po, compile (docs/i18n.md)"


# --- a small .po parser -----------------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.msgid if self.msgctxt is None else f"{self.msgctxt}{CTX}{self.msgid}"


_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")\s*$')


def parse_po(path: Path) -> tuple[Entry, list[Entry]]:
    """(header, entries) of a .po file; obsolete ``#~`` entries are left out."""
    entries: list[Entry] = []
    current: Entry | None = None
    target: tuple[str, int | None] | None = None
    flags: set[str] = set()

    def store(kind: str, index: int | None, text: str) -> None:
        if kind == "msgstr":
            current.msgstr[index or 0] = current.msgstr.get(index or 0, "") + text
        else:
            setattr(current, kind, (getattr(current, kind) or "") + text)

    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#~"):
            if not line:
                target = None
            continue
        if line.startswith("#,"):
            flags |= {f.strip() for f in line[2:].split(",")}
            continue
        if line.startswith("#"):
            continue
        match = _KEYWORD.match(line)
        if match:
            keyword, index, literal = match.groups()
            kind = keyword.split("[")[0]
            if kind in ("msgctxt", "msgid") and (current is None or current.msgstr):
                current = Entry(flags=flags)
                entries.append(current)
                flags = set()
            target = (kind, int(index) if index is not None else None)
            store(*target, ast.literal_eval(literal))
        elif line.startswith('"') and target is not None:
            store(*target, ast.literal_eval(line))
        else:
            raise AssertionError(f"{path}:{lineno}: cannot parse {raw!r}")
    header, *rest = entries
    assert header.msgid == "", "the first entry of a .po file is its header"
    return header, rest


def header_fields(header: Entry) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in header.msgstr[0].splitlines() if ": " in line)


@pytest.fixture(scope="module")
def catalog() -> tuple[Entry, list[Entry]]:
    return parse_po(PO_FILE)


# --- the catalog ------------------------------------------------------------------------------


def test_the_catalog_translates_every_message(catalog):
    _, entries = catalog
    assert len(entries) > 400
    untranslated = [e.key for e in entries if not e.msgstr or not all(e.msgstr.values())]
    assert untranslated == [], HOW_TO_FIX


def test_the_catalog_has_no_fuzzy_entry(catalog):
    header, entries = catalog
    assert "fuzzy" not in header.flags
    assert [e.key for e in entries if "fuzzy" in e.flags] == [], "review the fuzzy guesses, then drop the flag"


def test_the_catalog_is_chinese_with_a_single_plural_form(catalog):
    header, entries = catalog
    fields = header_fields(header)
    assert fields["Language"] == "zh_Hans"
    assert fields["Plural-Forms"] == "nplurals=1; plural=0;"
    assert "charset=UTF-8" in fields["Content-Type"]
    plurals = [e for e in entries if e.msgid_plural is not None]
    assert plurals, "the UI has plural messages"
    assert [e.key for e in plurals if set(e.msgstr) != {0}] == []


_PLACEHOLDER = re.compile(r"%\([A-Za-z_]\w*\)[sdifr]|%[sdifr]|\{[A-Za-z_]\w*\}|</?[A-Za-z][^>]*>")


def test_translations_keep_every_placeholder(catalog):
    _, entries = catalog
    broken = []
    for e in entries:
        wanted = sorted(set(_PLACEHOLDER.findall(e.msgid + (e.msgid_plural or ""))))
        for text in e.msgstr.values():
            if sorted(set(_PLACEHOLDER.findall(text))) != wanted:
                broken.append((e.key, wanted, text))
    assert broken == []


def test_translations_are_chinese_where_the_source_is_prose(catalog):
    _, entries = catalog
    # Product and format names stay as they are; everything with ordinary words is translated.
    prose = [e for e in entries if re.search(r"\b(?:the|a|is|of|and|to)\b", e.msgid, re.IGNORECASE)]
    assert [e.key for e in prose if not re.search(r"[\u4e00-\u9fff]", e.msgstr[0])] == []


def test_the_committed_mo_file_matches_the_po_file(catalog):
    _, entries = catalog
    with MO_FILE.open("rb") as fh:
        compiled = stdlib_gettext.GNUTranslations(fh)
    stale = []
    for e in entries:
        if e.msgid_plural is not None:
            got = compiled.npgettext(e.msgctxt, e.msgid, e.msgid_plural, 1) if e.msgctxt else compiled.ngettext(e.msgid, e.msgid_plural, 1)
        else:
            got = compiled.pgettext(e.msgctxt, e.msgid) if e.msgctxt else compiled.gettext(e.msgid)
        if got != e.msgstr[0]:
            stale.append(e.key)
    assert stale == [], "django.mo is out of date: run `manage.py compilemessages -l zh_Hans` and commit the .mo"


# Keywords makemessages hands to xgettext for Python, with the position of (context, msgid).
_PY_KEYWORDS = {
    "_": (None, 0),
    "gettext": (None, 0),
    "gettext_lazy": (None, 0),
    "gettext_noop": (None, 0),
    "ngettext": (None, 0),
    "ngettext_lazy": (None, 0),
    "pgettext": (0, 1),
    "pgettext_lazy": (0, 1),
    "npgettext": (0, 1),
    "npgettext_lazy": (0, 1),
}


def _message_key(args: list, positions: tuple[int | None, int]) -> str | None:
    ctx_at, id_at = positions
    if len(args) <= id_at or not isinstance(args[id_at], str):
        return None
    if ctx_at is None:
        return args[id_at]
    return f"{args[ctx_at]}{CTX}{args[id_at]}" if isinstance(args[ctx_at], str) else None


def _python_messages(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in _PY_KEYWORDS:
            args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            key = _message_key(args, _PY_KEYWORDS[name])
            if key:
                found.add(key)
    return found


def _template_messages(source: str) -> set[str]:
    """The msgids of {% trans %} / {% blocktrans %}, read from Django's own ``templatize``
    (the same conversion makemessages feeds to xgettext)."""
    found = set()
    # Indentation is template layout, meaningless to the tokenizer; one message never spans lines.
    text = "\n".join(line.lstrip() for line in templatize(source).splitlines())
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in (tokenize.NL, tokenize.NEWLINE)]
    for i, tok in enumerate(tokens[:-1]):
        if tok.type != tokenize.NAME or tok.string not in _PY_KEYWORDS or tokens[i + 1].string != "(":
            continue
        args, parts = [], []
        for t in tokens[i + 2 :]:
            if t.type == tokenize.STRING:
                parts.append(ast.literal_eval(t.string))
                continue
            if parts:
                args.append("".join(parts))
                parts = []
            if t.string != ",":
                break
        key = _message_key(args, _PY_KEYWORDS[tok.string])
        if key:
            found.add(key)
    return found


def source_messages() -> dict[str, str]:
    """msgid → first file marking it, over what makemessages scans (the apps and templates;
    not tests/, bench/, var/ or .venv/)."""
    found: dict[str, str] = {}
    packages = [p for p in sorted(ROOT.iterdir()) if (p / "__init__.py").is_file() and p.name not in ("tests", "bench")]
    for path in [p for pkg in packages for p in sorted(pkg.rglob("*.py"))]:
        for key in _python_messages(path.read_text(encoding="utf-8")):
            found.setdefault(key, str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "templates").rglob("*")):
        if path.suffix in (".html", ".txt"):
            for key in _template_messages(path.read_text(encoding="utf-8")):
                found.setdefault(key, str(path.relative_to(ROOT)))
    return found


def test_every_string_marked_for_translation_is_in_the_catalog(catalog):
    _, entries = catalog
    translated = {e.key for e in entries if e.msgstr and all(e.msgstr.values())}
    marked = source_messages()
    assert len(marked) > 400, "the source scan found the UI strings"
    missing = {key: where for key, where in marked.items() if key not in translated}
    assert missing == {}, HOW_TO_FIX


def test_the_source_scan_sees_templates_python_plurals_and_contexts():
    found = source_messages()
    assert found["Review queue"].startswith("templates/")
    assert found["Only clinicians and admins review pairs."] == "curation/services/review.py"
    assert "%(n)s pairs waiting" not in found and "%(n)s pair waiting" in found
    assert f"qa field{CTX}input" in found


# --- the pages --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _chinese_is_the_default(settings):
    """The project default (MEDPORTAL_LANGUAGE unset); tests/conftest.py runs other tests in English."""
    settings.LANGUAGE_CODE = "zh-hans"


@pytest.fixture
def pages(curator, clinician, make_pair):
    """Each page with the user who may see it and strings from the catalog in both languages
    (template text, Python gettext_lazy labels and plural forms)."""
    from curation.services.versions import dataset_version_freeze

    make_pair(curator, department="心内科", tags=("高血压",))
    make_pair(curator, status="in_review", department="心内科")
    make_pair(curator, status="approved", department="心内科")
    dataset_version_freeze(user=curator, name="v1", split=(1, 0, 0))
    return {
        "home": (
            curator,
            reverse("home"),
            ["工作台", "全部问答对", "草稿", "审核中", "已通过", "导入问答对文件", "将已通过的问答对冻结为数据集版本", "退出登录"],
            ["Dashboard", "All pairs", "Draft", "In review", "Approved", "Import a file of QA pairs", "Log out"],
        ),
        "pair list": (
            curator,
            reverse("curation:pair-list"),
            ["新建问答对", "3 个问答对", "每页条数", "科室", "标签", "最新优先", "设置科室", "提交审核"],
            ["New pair", "3 pairs", "Per page", "Department", "Tags", "Newest first", "Set department", "Submit for review"],
        ),
        "review queue": (
            clinician,
            reverse("curation:review-queue"),
            ["待审队列", "1 个问答对待审", "审核中", "提交时间", "票通过后即为已通过"],
            ["Review queue", "1 pair waiting", "In review", "Submitted", "approval(s) in its round"],
        ),
        "import list": (
            curator,
            reverse("curation:import-list"),
            ["数据导入", "导入文件", "暂无导入记录。"],
            ["Imports", "Import a file", "No imports yet."],
        ),
        "import page": (
            curator,
            reverse("curation:import-create"),
            ["导入问答对文件", "可导入的内容", "自动检测", "字符编码", "新问答对的状态", "上传"],
            ["Import a file of QA pairs", "What can be imported", "Detect automatically", "Encoding", "Status of the new pairs", "Upload"],
        ),
        "version list": (
            curator,
            reverse("curation:version-list"),
            ["数据集版本", "冻结新版本", "训练集", "验证集", "测试集", "合成数据占比", "冻结人"],
            ["Dataset versions", "Freeze a new version", "Train", "Validation", "Test", "Synthetic share", "Frozen by"],
        ),
    }


PAGE_NAMES = ["home", "pair list", "review queue", "import list", "import page", "version list"]


def _get(client, user, url) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def _switch(client, language: str, next_url: str = "/"):
    response = client.post(reverse("set_language"), {"language": language, "next": next_url})
    assert response.status_code == 302 and response["Location"] == next_url
    return response


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGE_NAMES)
def test_each_page_speaks_chinese_by_default(client, pages, name):
    user, url, chinese, english = pages[name]
    page = _get(client, user, url)
    assert '<html lang="zh-hans">' in page
    assert [s for s in chinese if s not in page] == []
    assert [s for s in english if s in page and s not in chinese] == [], "English left on a Chinese page"


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGE_NAMES)
def test_each_page_speaks_english_after_choosing_english(client, pages, name):
    user, url, chinese, english = pages[name]
    client.force_login(user)
    _switch(client, "en", url)
    page = _get(client, user, url)
    assert '<html lang="en">' in page
    assert [s for s in english if s not in page] == []
    assert [s for s in chinese if s in page] == [], "Chinese left on an English page"


@pytest.mark.django_db
def test_the_language_choice_persists_for_the_rest_of_the_session(client, pages):
    user, url, _, _ = pages["home"]
    client.force_login(user)
    _switch(client, "en", reverse("curation:pair-list"))
    cookie = client.cookies[settings.LANGUAGE_COOKIE_NAME]
    assert cookie.value == "en"
    assert cookie["max-age"] == "" and cookie["expires"] == "", "a session cookie: it ends with the browser session"
    for name in PAGE_NAMES:
        _, url, chinese, english = pages[name]
        page = _get(client, pages[name][0], url)  # a different user, the same browser session
        assert english[0] in page and chinese[0] not in page, name
    _switch(client, "zh-hans")
    assert "工作台" in _get(client, user, reverse("home"))


@pytest.mark.django_db
def test_an_unknown_language_choice_keeps_chinese(client, curator):
    client.force_login(curator)
    client.post(reverse("set_language"), {"language": "fr", "next": "/"})
    page = _get(client, curator, reverse("home"))
    assert '<html lang="zh-hans">' in page and "工作台" in page


@pytest.mark.django_db
def test_a_browser_asking_for_english_gets_english_and_one_asking_for_zh_cn_gets_chinese(client, curator):
    client.force_login(curator)
    assert "Dashboard" in client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    page = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.5").content.decode()
    assert '<html lang="zh-hans">' in page and "工作台" in page


@pytest.mark.django_db
def test_the_login_page_speaks_chinese_to_visitors(client):
    page = client.get(reverse("login")).content.decode()
    for text in ("登录", "用户名", "密码"):
        assert text in page
    assert "Username" not in page


@pytest.mark.django_db
def test_flash_messages_from_views_and_services_are_translated(client, curator, make_pair):
    pair = make_pair(curator)
    client.force_login(curator)
    url = reverse("curation:pair-bulk")
    page = client.post(url, {"action": "difficulty", "value": "", "ids": [pair.pk], f"v{pair.pk}": pair.version}, follow=True)
    assert "请选择要应用的科室、标签或难度。" in page.content.decode()
    page = client.post(url, {"action": "department", "value": "儿科", "ids": [pair.pk], f"v{pair.pk}": pair.version}, follow=True)
    assert "已更新 1 个问答对。" in page.content.decode()


@pytest.mark.django_db
def test_a_count_of_new_pairs_reads_xinjian_not_creation_time(client, curator):
    """“Created” next to a count means new pairs (新建), not a timestamp (创建时间)."""
    from curation.models import ImportBatch

    batch = ImportBatch.objects.create(created_by=curator, filename="a.json", status=ImportBatch.Status.SUCCEEDED, created_count=7)
    for url in (reverse("home"), reverse("curation:import-list"), reverse("curation:import-detail", args=[batch.pk])):
        page = _get(client, curator, url)
        assert "新建" in page, url
        assert "7 创建时间" not in page and ">创建时间<" not in page, url
