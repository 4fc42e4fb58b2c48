"""curation.importers: every format, encoding and file-level error, on small inline files."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from curation.importers import (
    FORMATS,
    QA_FIELDS,
    ImportFileError,
    ParsedRecord,
    RowIssue,
    detect_encoding,
    detect_format,
    guess_mapping,
    open_source,
    read_columns,
)


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def items(path, **kwargs) -> list[ParsedRecord | RowIssue]:
    return list(open_source(path, **kwargs).records())


def records(path, **kwargs) -> list[ParsedRecord]:
    return [i for i in items(path, **kwargs) if isinstance(i, ParsedRecord)]


def issues(path, **kwargs) -> list[RowIssue]:
    return [i for i in items(path, **kwargs) if isinstance(i, RowIssue)]


def error_of(path, **kwargs) -> str:
    with pytest.raises(ImportFileError) as info:
        source = open_source(path, **kwargs)
        list(source.records())
    return str(info.value)


# --------------------------------------------------------------------------- constants


def test_formats_and_fields_are_the_contract():
    assert FORMATS == (
        "alpaca", "sharegpt", "openai", "query_response", "question_answer", "medical_o1",
        "csv", "tsv", "xlsx", "medquad", "pubmedqa", "mcq",
    )
    assert QA_FIELDS == (
        "instruction", "input", "output", "system", "history", "reasoning", "department", "tags", "disease_codes", "source_ref",
    )


# --------------------------------------------------------------------------- alpaca


def test_alpaca_json_array_with_crlf_system_and_history(tmp_path):
    data = [
        {"instruction": "  高血压能吃党参吗？ ", "input": "", "output": "可以。\n", "system": "你是医生",
         "history": [["你好", "您好"]], "id": 7},
        {"instruction": "Q2", "input": "ctx", "output": "A2"},
    ]
    text = json.dumps(data, ensure_ascii=False, indent=4).replace("\n", "\r\n")
    path = write(tmp_path, "a.json", text)
    source = open_source(path)
    assert (source.format, source.encoding, source.total, source.columns, source.mapping) == ("alpaca", "utf-8", 2, [], {})
    first, second = list(source.records())
    assert first == ParsedRecord(
        row=1, instruction="高血压能吃党参吗？", output="可以。", system="你是医生",
        history=[["你好", "您好"]], extra={"id": 7},
    )
    assert (second.row, second.instruction, second.input, second.output) == (2, "Q2", "ctx", "A2")


def test_alpaca_jsonl_skips_empty_and_reports_bad_lines(tmp_path):
    lines = [
        '{"instruction": "q1", "input": "", "output": "a1"}',
        "",
        '{"instruction": "q2", "input": "", "output": "   "}',
        '{"instruction": "", "input": "", "output": "a3"}',
        '{"instruction": "q4", "output": "a4" "x": 1}',
        "[1, 2]",
        '{"instruction": "", "input": "only input", "output": "a7"}',
        '{"instruction": "q8", "output": "a8", "history": "oops"}',
        '{"instruction": "q9", "input": ""}',
        '{"instruction": {"nested": 1}, "output": "a10"}',
    ]
    path = write(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    source = open_source(path)
    assert source.format == "alpaca" and source.total == 9
    got = list(source.records())
    assert [(i.row, type(i).__name__) for i in got] == [
        (1, "ParsedRecord"), (3, "RowIssue"), (4, "RowIssue"), (5, "RowIssue"), (6, "RowIssue"),
        (7, "ParsedRecord"), (8, "RowIssue"), (9, "RowIssue"), (10, "RowIssue"),
    ]
    by_row = {i.row: i for i in got}
    assert by_row[3] == RowIssue(3, "Line 3: the answer is empty.", "skipped")
    assert by_row[4] == RowIssue(4, "Line 4: the question is empty.", "skipped")
    assert by_row[5].kind == "error"
    column = lines[4].index("\"x\"") + 1
    assert by_row[5].message == f"Line 5: not valid JSON (Expecting ',' delimiter at column {column})."
    assert by_row[6] == RowIssue(6, "Line 6: expected a JSON object, got a list.", "error")
    # An empty instruction with an input: the input is the question.
    assert (by_row[7].instruction, by_row[7].input) == ("only input", "")
    assert by_row[8].kind == "error" and "history" in by_row[8].message
    assert by_row[9] == RowIssue(9, "Line 9: no 'output' field.", "error")
    assert by_row[10].message == "Line 10: the 'instruction' field is an object, not text."


def test_json_lines_whose_first_line_is_broken_is_still_json_lines(tmp_path):
    path = write(tmp_path, "b.jsonl", '{"instruction": "q1", "output": \n{"instruction": "q2", "output": "a2"}\n')
    got = items(path)
    assert got[0].kind == "error" and got[0].message.startswith("Line 1: not valid JSON")
    assert got[1].instruction == "q2"


def test_single_pretty_printed_object_is_one_record(tmp_path):
    path = write(tmp_path, "one.json", json.dumps({"query": "q", "response": "r"}, indent=2))
    [record] = records(path)
    assert (record.row, record.instruction, record.output) == (1, "q", "r")


# --------------------------------------------------------------------------- sharegpt / openai


def test_sharegpt_last_pair_is_the_record_and_earlier_pairs_are_history(tmp_path):
    rows = [
        {"conversations": [
            {"from": "system", "value": "你是医生"},
            {"from": "human", "value": "头痛"},
            {"from": "gpt", "value": "多久了？"},
            {"from": "human", "value": "三天"},
            {"from": "gpt", "value": "建议就诊"},
        ], "id": "x1"},
        {"conversations": [{"from": "human", "value": "只有问题"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        {"conversations": [{"from": "observation", "value": "a"}]},
        {"conversations": "not a list"},
    ]
    path = write(tmp_path, "s.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    got = items(path)
    first = got[0]
    assert isinstance(first, ParsedRecord)
    assert (first.system, first.instruction, first.output) == ("你是医生", "三天", "建议就诊")
    assert first.history == [["头痛", "多久了？"]]
    assert first.extra == {"id": "x1"}
    assert got[1] == RowIssue(2, "Line 2: the conversation ends with a question that has no answer.", "skipped")
    assert got[2].kind == "error" and "turns must alternate" in got[2].message
    assert got[3].kind == "error" and "'observation'" in got[3].message
    assert got[4].message == "Line 5: 'conversations' is a string, not a list of turns."


def test_sharegpt_messages_variant_and_top_level_system(tmp_path):
    row = {"system": "sys", "messages": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}
    path = write(tmp_path, "m.json", json.dumps([row]))
    source = open_source(path)
    assert source.format == "sharegpt"
    [record] = source.records()
    assert (record.system, record.instruction, record.output) == ("sys", "q", "a")


def test_openai_messages_with_content_parts(tmp_path):
    row = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "doctor"}]},
        {"role": "assistant", "content": "hi"},
    ]}
    path = write(tmp_path, "o.jsonl", json.dumps(row) + "\n" + json.dumps(row) + "\n")
    source = open_source(path)
    assert source.format == "openai"
    first = next(source.records())
    assert (first.system, first.instruction, first.output, first.history) == ("be brief", "hello\ndoctor", "hi", [])


# --------------------------------------------------------------------------- other JSON record shapes


def test_query_response_question_answer_and_medical_o1(tmp_path):
    qr = write(tmp_path, "qr.jsonl", json.dumps({"query": "问", "response": "答"}, ensure_ascii=False) + "\n")
    assert open_source(qr).format == "query_response"
    assert [(r.instruction, r.output) for r in records(qr)] == [("问", "答")]

    qa = write(tmp_path, "qa.jsonl", json.dumps(
        {"question": "胃痛怎么办", "answer": "就医", "label": "消化科", "related_diseases": "胃炎，胃溃疡", "score": 3},
        ensure_ascii=False,
    ) + "\n")
    assert open_source(qa).format == "question_answer"
    [record] = records(qa)
    assert (record.department, record.tags, record.disease_codes) == ("消化科", ["消化科"], ["胃炎", "胃溃疡"])
    assert record.extra == {"label": "消化科", "related_diseases": "胃炎，胃溃疡", "score": 3}

    o1 = write(tmp_path, "o1.json", json.dumps([{"Question": "Q", "Complex_CoT": "think", "Response": "R"}]))
    assert open_source(o1).format == "medical_o1"
    [record] = records(o1)
    assert (record.instruction, record.reasoning, record.output) == ("Q", "think", "R")


def test_format_override_applies_to_json(tmp_path):
    path = write(tmp_path, "x.jsonl", json.dumps({"question": "q", "answer": "a", "query": "Q", "response": "R"}) + "\n")
    assert records(path)[0].instruction == "Q"  # query/response is checked first
    assert records(path, format="question_answer")[0].instruction == "q"


# --------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_dict_keyed_by_pmid(tmp_path):
    doc = {
        "111": {"QUESTION": "Does X work?", "CONTEXTS": ["c1", "c2"], "LABELS": ["A", "B"], "MESHES": ["m"],
                "YEAR": "2001", "final_decision": "yes", "LONG_ANSWER": "It does."},
        "222": {"QUESTION": "Empty?", "CONTEXTS": [], "final_decision": "no", "LONG_ANSWER": ""},
    }
    path = write(tmp_path, "ori_pqal.json", json.dumps(doc, indent=4))
    source = open_source(path)
    assert (source.format, source.total) == ("pubmedqa", 2)
    first, second = list(source.records())
    assert (first.instruction, first.input, first.output) == ("Does X work?", "c1\n\nc2", "It does.")
    assert (first.source_ref, first.tags) == ("111", ["pubmedqa:yes"])
    assert first.extra["final_decision"] == "yes" and first.extra["MESHES"] == ["m"]
    assert second == RowIssue(2, "Record 2 (PMID 222): the answer is empty.", "skipped")


def test_pubmedqa_ground_truth_map_is_not_a_qa_file(tmp_path):
    path = write(tmp_path, "test_ground_truth.json", json.dumps({"1": "yes", "2": "no"}, indent=4))
    message = error_of(path)
    assert message == (
        "This JSON file maps 2 ids to labels (like PubMedQA's test_ground_truth.json); "
        "it holds no questions or answers to import."
    )
    with pytest.raises(ImportFileError, match="maps 2 ids to labels"):
        detect_format(path)


# --------------------------------------------------------------------------- JSON document errors


def test_truncated_json_array_is_a_file_error_naming_the_place(tmp_path):
    text = json.dumps([{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}], indent=2)
    cut = text[: text.index('"a2"') - 2]  # ends inside the second object
    path = write(tmp_path, "t.json", cut)
    lines = cut.split("\n")
    assert error_of(path) == (
        f"Truncated JSON: the file ends inside an object at line {len(lines)}, column {len(lines[-1])} "
        "(record 2 is incomplete)."
    )


def test_truncated_json_inside_a_string(tmp_path):
    text = '[{"instruction": "q1", "output": "an answer that sto'
    path = write(tmp_path, "t.json", text)
    assert error_of(path) == (
        f"Truncated JSON: the file ends inside a string at line 1, column {len(text)} (record 1 is incomplete)."
    )


def test_invalid_json_document_names_line_and_column(tmp_path):
    line = '  {"instruction": "q" "output": "a"}'
    path = write(tmp_path, "bad.json", f"[\n{line}\n]")
    column = line.index('"output"') + 1
    assert error_of(path) == f"Invalid JSON at line 2, column {column}: Expecting ',' delimiter."


def test_empty_json_array_and_unknown_keys(tmp_path):
    assert error_of(write(tmp_path, "e.json", "[]")) == "The JSON array is empty: there are no records to import."
    message = error_of(write(tmp_path, "k.json", json.dumps([{"prompt": "p", "completion": "c"}])))
    assert message.startswith("Cannot tell the format: the first record has the keys prompt, completion; expected")
    message = error_of(write(tmp_path, "l.json", "[[1, 2], [3]]"))
    assert message == "The JSON array's first item is a list, not an object (expected one object per question-answer record)."


# --------------------------------------------------------------------------- CSV / TSV


TOYHOM_LIKE = (
    "department,title,ask,answer\n"
    "心血管科,高血压患者能吃党参吗？,我有高血压，可以吃党参吗？,可以。\n"
    '消化科,胃痛,"胃痛三天，\n吃什么药？","先就医，\n再用药。"\n'
    "肝病科,空答案,乙肝怎么办,\n"
    ",,,\n"
    "神经科,头痛,头痛怎么办,休息\n"
)


def test_csv_gb18030_with_quoted_multiline_fields_and_default_mapping(tmp_path):
    path = write(tmp_path, "toyhom.csv", TOYHOM_LIKE, encoding="gb18030")
    source = open_source(path)
    assert (source.format, source.encoding) == ("csv", "gb18030")
    assert source.columns == ["department", "title", "ask", "answer"]
    assert source.mapping == {"instruction": "ask", "output": "answer", "department": "department"}
    assert source.total == 4  # the blank row is not counted
    got = list(source.records())
    assert [type(i).__name__ for i in got] == ["ParsedRecord", "ParsedRecord", "RowIssue", "ParsedRecord"]
    first, second, skipped, last = got
    assert first == ParsedRecord(
        row=1, instruction="我有高血压，可以吃党参吗？", output="可以。", department="心血管科",
        extra={"title": "高血压患者能吃党参吗？"},
    )
    assert (second.instruction, second.output) == ("胃痛三天，\n吃什么药？", "先就医，\n再用药。")
    assert skipped == RowIssue(3, "Row 3: the answer is empty.", "skipped")
    assert last.row == 5  # row numbers count data rows, blank ones included


def test_csv_crlf_utf8_bom_and_utf16(tmp_path):
    text = TOYHOM_LIKE.replace("\n", "\r\n")
    bom = write(tmp_path, "bom.csv", codecs.BOM_UTF8 + text.encode("utf-8"))
    utf16 = write(tmp_path, "u16.csv", text.encode("utf-16"))
    for path, encoding in ((bom, "utf-8-sig"), (utf16, "utf-16")):
        source = open_source(path)
        assert source.encoding == encoding
        assert source.columns[0] == "department"  # no BOM left in the first header
        got = records(path)
        assert [r.instruction for r in got] == ["我有高血压，可以吃党参吗？", "胃痛三天，\n吃什么药？", "头痛怎么办"]
        assert got[1].output == "先就医，\n再用药。"  # CRLF inside a quoted field becomes \n


def test_csv_mapping_override_and_list_fields(tmp_path):
    path = write(tmp_path, "m.csv", "Q,Response,Title,标签,ICD10,PMID\nq1,a1,t1,\"内科, 急诊\",I10;E11,123\n")
    source = open_source(path, mapping={"instruction": "Title", "input": "Q"})
    assert source.mapping == {
        "instruction": "Title", "input": "Q", "output": "Response", "tags": "标签", "disease_codes": "ICD10", "source_ref": "PMID",
    }
    [record] = source.records()
    assert (record.instruction, record.input, record.output) == ("t1", "q1", "a1")
    assert (record.tags, record.disease_codes, record.source_ref) == (["内科", "急诊"], ["I10", "E11"], "123")
    assert record.extra == {}
    # An empty value unmaps a guessed field; the column then lands in extra.
    [record] = records(path, mapping={"source_ref": ""})
    assert record.source_ref == "" and record.extra == {"Title": "t1", "PMID": "123"}


def test_mapping_errors_are_file_errors(tmp_path):
    path = write(tmp_path, "m.csv", "question,answer,科室\nq,a,内科\n")
    assert error_of(path, mapping={"instruction": "问题"}) == (
        "The mapping sends 'instruction' to the column '问题', but the file has no such column "
        "(columns: question, answer, 科室)."
    )
    assert error_of(path, mapping={"title": "question"}).startswith("Unknown field 'title' in the column mapping")
    no_answer = write(tmp_path, "n.csv", "问题,科室\nq,内科\n")
    assert error_of(no_answer) == (
        "No answer column found (columns: 问题, 科室); map 'output' to the answer column."
    )
    no_question = write(tmp_path, "nq.csv", "foo,答案\nq,a\n")
    assert error_of(no_question).startswith("No question column found (columns: foo, 答案)")


def test_guess_mapping_synonyms():
    assert guess_mapping(["问题", "回答", "科室"]) == {"instruction": "问题", "output": "回答", "department": "科室"}
    assert guess_mapping(["Question", "Complex_CoT", "Response"]) == {
        "instruction": "Question", "output": "Response", "reasoning": "Complex_CoT",
    }
    assert guess_mapping(["title", "answer"]) == {"instruction": "title", "output": "answer"}
    assert guess_mapping(["ask", "title", "answer"])["instruction"] == "ask"


def test_csv_row_with_too_many_fields_is_an_error_row(tmp_path):
    path = write(tmp_path, "x.csv", "question,answer\nq1,a1\nq2,a2,stray\nq3\n")
    got = items(path)
    assert got[1] == RowIssue(2, "Row 2: 3 fields but the header has 2 columns (check the quoting).", "error")
    assert got[2] == RowIssue(3, "Row 3: the answer is empty.", "skipped")


def test_tsv_and_semicolon_csv(tmp_path):
    tsv = write(tmp_path, "x.tsv", "instruction\toutput\tsystem\nq\ta\ts\n")
    source = open_source(tsv)
    assert source.format == "tsv"
    [record] = source.records()
    assert (record.instruction, record.output, record.system) == ("q", "a", "s")
    semi = write(tmp_path, "x.csv", "question;answer\nq;a\n")
    assert [(r.instruction, r.output) for r in records(semi)] == [("q", "a")]


def test_header_only_and_unclosed_quote(tmp_path):
    assert error_of(write(tmp_path, "h.csv", "question,answer\n")) == "The file has a header row but no data rows."
    assert error_of(write(tmp_path, "blank.csv", "\n\nquestion,answer\n")) == (
        "The first row is empty: a header row with column names is required."
    )


# --------------------------------------------------------------------------- XLSX


def test_xlsx_made_with_openpyxl(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["科室", "问题", "回答", "编号"])
    sheet.append(["内科", "血压 150/100 怎么办？", "低盐饮食\n按时服药", 12.0])
    sheet.append([None, None, None, None])
    sheet.append(["外科", "无答案", None, 13])
    path = tmp_path / "qa.xlsx"
    workbook.save(path)

    assert detect_format(path) == "xlsx"
    assert read_columns(path) == ["科室", "问题", "回答", "编号"]
    source = open_source(path)
    assert (source.format, source.encoding, source.columns) == ("xlsx", None, ["科室", "问题", "回答", "编号"])
    assert source.mapping == {"instruction": "问题", "output": "回答", "department": "科室", "source_ref": "编号"}
    got = list(source.records())
    assert got[0] == ParsedRecord(
        row=1, instruction="血压 150/100 怎么办？", output="低盐饮食\n按时服药", department="内科", source_ref="12",
    )
    assert got[1] == RowIssue(3, "Row 3: the answer is empty.", "skipped")
    assert len(got) == 2


def test_xlsx_format_on_a_text_file_and_damaged_zip(tmp_path):
    text = write(tmp_path, "a.csv", "question,answer\nq,a\n")
    assert error_of(text, format="xlsx") == "Not an XLSX workbook: the file is not a ZIP archive."
    damaged = write(tmp_path, "d.xlsx", b"PK\x03\x04" + b"\x00" * 64)
    assert error_of(damaged).startswith("Cannot open the file as an XLSX workbook")


# --------------------------------------------------------------------------- multiple choice


CMMLU = ",Question,A,B,C,D,Answer\n0,女性生殖腺是,卵巢,前庭大腺,前庭球,乳腺,A\n1,多选,甲,乙,丙,丁,AC\n2,坏答案,甲,乙,丙,丁,E\n"


def test_cmmlu_csv_is_mcq(tmp_path):
    path = write(tmp_path, "test/anatomy.csv", CMMLU)
    assert detect_format(path) == "mcq"
    source = open_source(path)
    assert source.format == "mcq"
    assert source.columns == ["column_1", "Question", "A", "B", "C", "D", "Answer"]
    first, multi, bad = list(source.records())
    assert first.instruction == "女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺"
    assert first.output == "A. 卵巢"
    assert first.tags == ["cmmlu:anatomy"]
    assert first.source_ref == "test/anatomy#0"
    assert first.extra == {"answer": "A", "subject": "anatomy", "split": "test",
                           "options": {"A": "卵巢", "B": "前庭大腺", "C": "前庭球", "D": "乳腺"}}
    assert multi.output == "A. 甲\nC. 丙"
    assert bad == RowIssue(3, "Row 3: the answer 'E' is not one of the options A, B, C, D.", "error")


# --------------------------------------------------------------------------- MedQuAD


MEDQUAD = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000004" source="GARD" url="https://example.org/abcd">
<Focus>ABCD syndrome</Focus>
<FocusAnnotations>
  <UMLS><CUIs><CUI>C1838099</CUI></CUIs><SemanticTypes><SemanticType>T047</SemanticType></SemanticTypes>
  <SemanticGroup>Disorders</SemanticGroup></UMLS>
  <Synonyms><Synonym>BRWS</Synonym></Synonyms>
</FocusAnnotations>
<QAPairs>
  <QAPair pid="1">
      <Question qid="0000004-1" qtype="symptoms">What are the symptoms of ABCD syndrome ?</Question>
      <Answer>Signs   include
           hearing loss &amp; albinism.</Answer>
  </QAPair>
  <QAPair pid="2">
      <Question qid="0000004-2" qtype="treatment">How to treat ABCD syndrome ?</Question>
      <Answer></Answer>
  </QAPair>
</QAPairs>
</Document>
"""

MEDQUAD_LEGACY = """<?xml version="1.0" encoding="UTF-8"?>
<doc docid="0000007" corpus="NINDS" url="http://example.org/has">
<doctitle-focus>Holmes-Adie</doctitle-focus>
<umls><cui></cui><semanticType></semanticType><semanticGroup></semanticGroup></umls>
<qaPairs>
<pair pid="1"><question qid="0000007-1" qtype="information">what is holmes-adie syndrome ?</question>
<answer>A neurological disorder.</answer></pair>
</qaPairs>
</doc>
"""

MEDQUAD_DRUGS = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="MPlusDrugs" url="https://example.org/drug">
<!--Answers from MedlinePlus Drug information were removed to comply with the MedlinePlus copyright-->
<Focus>Abacavir</Focus>
<FocusAnnotations><Category>Drug</Category></FocusAnnotations>
<QAPairs>
  <QAPair pid="1"><Question qid="0000001-1" qtype="usage">How should Abacavir be used ?</Question><Answer></Answer></QAPair>
</QAPairs>
</Document>
"""


def test_medquad_document(tmp_path):
    path = write(tmp_path, "0000004.xml", MEDQUAD)
    assert detect_format(path) == "medquad"
    source = open_source(path)
    assert (source.format, source.encoding, source.total) == ("medquad", "utf-8", 2)
    record, skipped = list(source.records())
    assert record.instruction == "What are the symptoms of ABCD syndrome ?"
    assert record.output == "Signs include\nhearing loss & albinism."
    assert (record.source_ref, record.tags, record.disease_codes) == ("GARD 0000004#1", ["qtype:symptoms"], ["UMLS:C1838099"])
    assert record.extra["focus"] == "ABCD syndrome" and record.extra["url"] == "https://example.org/abcd"
    assert record.extra["qtype"] == "symptoms" and record.extra["synonyms"] == ["BRWS"]
    assert skipped == RowIssue(2, "Pair 2 (pid 2, qid 0000004-2): the answer is empty.", "skipped")


def test_medquad_legacy_schema_and_removed_answers_in_a_folder(tmp_path):
    write(tmp_path, "q/6_NINDS_QA/0000007.xml", MEDQUAD_LEGACY)
    write(tmp_path, "q/11_MPlusDrugs_QA/0000001.xml", MEDQUAD_DRUGS)
    write(tmp_path, "q/2_GARD_QA/0000004.xml", MEDQUAD)
    write(tmp_path, "q/readme.txt", "not imported")
    write(tmp_path, "q/.hidden/x.xml", "<broken")
    source = open_source(tmp_path / "q")
    assert (source.format, source.encoding, source.total) == ("medquad", "utf-8", 4)
    got = list(source.records())
    assert [(i.file, i.row, type(i).__name__) for i in got] == [
        ("11_MPlusDrugs_QA/0000001.xml", 1, "RowIssue"),
        ("2_GARD_QA/0000004.xml", 1, "ParsedRecord"),
        ("2_GARD_QA/0000004.xml", 2, "RowIssue"),
        ("6_NINDS_QA/0000007.xml", 1, "ParsedRecord"),
    ]
    assert got[0].message == (
        "Pair 1 (pid 1, qid 0000001-1): the answer is empty "
        "(upstream removed the MPlusDrugs answers for copyright reasons)."
    )
    legacy = got[3]
    assert (legacy.instruction, legacy.output, legacy.source_ref) == (
        "what is holmes-adie syndrome ?", "A neurological disorder.", "NINDS 0000007#1",
    )
    assert legacy.disease_codes == []  # the empty <cui/> is ignored


def test_xml_errors(tmp_path):
    message = error_of(write(tmp_path, "bad.xml", "<Document>\n<QAPairs></Document>"))
    assert message.startswith("Malformed XML at line 2, column ") and message.endswith(": mismatched tag.")
    assert error_of(write(tmp_path, "other.xml", "<rss><item/></rss>")) == (
        "The XML root element is <rss>; expected a MedQuAD <Document>."
    )
    bomb = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Document>&a;</Document>'
    assert "refused for security" in error_of(write(tmp_path, "bomb.xml", bomb))


# --------------------------------------------------------------------------- directories


def test_directory_numbers_rows_per_file_and_prefixes_file_errors(tmp_path):
    write(tmp_path, "d/dev/nutrition.csv", CMMLU)
    write(tmp_path, "d/test/nutrition.csv", CMMLU)
    write(tmp_path, "d/README.md", "# not data")
    source = open_source(tmp_path / "d")
    assert (source.format, source.total) == ("mcq", 6)
    got = list(source.records())
    assert [(i.file, i.row) for i in got] == [
        ("dev/nutrition.csv", 1), ("dev/nutrition.csv", 2), ("dev/nutrition.csv", 3),
        ("test/nutrition.csv", 1), ("test/nutrition.csv", 2), ("test/nutrition.csv", 3),
    ]
    assert got[0].extra["split"] == "dev" and got[3].source_ref == "test/nutrition#0"

    write(tmp_path, "d/test/zz.json", "[")
    assert error_of(tmp_path / "d") == "test/zz.json: Truncated JSON: the file ends inside an array at line 1, column 1."


def test_mixed_directory_and_empty_directory(tmp_path):
    write(tmp_path, "m/a.jsonl", json.dumps({"instruction": "q", "output": "a"}) + "\n")
    write(tmp_path, "m/b.csv", "question,answer\nq2,a2\n", encoding="gb18030")
    source = open_source(tmp_path / "m")
    assert (source.format, source.encoding, source.columns, source.total) == ("mixed", "utf-8", [], 2)
    assert [(r.file, r.instruction) for r in source.records()] == [("a.jsonl", "q"), ("b.csv", "q2")]
    (tmp_path / "empty").mkdir()
    assert error_of(tmp_path / "empty") == (
        "The folder 'empty' contains no supported files (.csv, .json, .jsonl, .tsv, .xlsx, .xlsm, .xml)."
    )


# --------------------------------------------------------------------------- file-level errors


def test_empty_files(tmp_path):
    assert error_of(write(tmp_path, "e.json", b"")) == "The file is empty."
    assert error_of(write(tmp_path, "w.csv", b" \n\r\n\t")) == "The file is empty."
    assert error_of(write(tmp_path, "bom.csv", codecs.BOM_UTF16_LE)) == "The file is empty."


def test_unknown_and_undetectable_formats(tmp_path):
    path = write(tmp_path, "x.csv", "question,answer\nq,a\n")
    assert error_of(path, format="parquet") == (
        "Unknown format 'parquet'; expected one of alpaca, sharegpt, openai, query_response, question_answer, "
        "medical_o1, csv, tsv, xlsx, medquad, pubmedqa, mcq."
    )
    notes = write(tmp_path, "notes.txt", "just some prose without separators\nmore prose\n")
    assert error_of(notes) == (
        "Cannot tell the format of 'notes.txt': the first line has no column separator; pick the format explicitly."
    )
    assert error_of(write(tmp_path, "weird.bin", "hello")) .startswith("Cannot tell the format of 'weird.bin'")


def test_binary_garbage(tmp_path):
    assert error_of(write(tmp_path, "g.json", bytes(range(256)) * 4)) == (
        "The file contains binary data (NUL bytes), not text."
    )
    assert error_of(write(tmp_path, "p.csv", b"\x89PNG\r\n\x1a\n" + b"\x01" * 50)) == (
        "The file is a PNG image, not a question-answer file."
    )
    assert error_of(write(tmp_path, "old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)) == (
        "Legacy Excel .xls files are not supported; save the sheet as .xlsx or CSV."
    )


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "nope.csv") == "The file 'nope.csv' does not exist."


# --------------------------------------------------------------------------- encodings


def test_explicit_wrong_encoding_names_the_byte(tmp_path):
    path = write(tmp_path, "toyhom.csv", TOYHOM_LIKE, encoding="gb18030")
    offset = len("department,title,ask,answer\n".encode())
    bad_byte = TOYHOM_LIKE.encode("gb18030")[offset]
    assert error_of(path, encoding="utf-8") == (
        f"Cannot decode the file as UTF-8 (byte 0x{bad_byte:02x} at offset {offset}); pick another encoding."
    )
    assert error_of(path, encoding="klingon") == "Unknown encoding 'klingon'."
    # The right explicit encoding works, and so does GBK (a subset of GB18030).
    assert len(records(path, encoding="gbk")) == 3


def test_auto_detected_encoding_that_fails_later_names_it(tmp_path):
    # Valid UTF-8 for the first 64 KiB (what read_columns samples), then a GB18030 byte pair.
    head = "question,answer\n" + "q,a\n" * 20000
    path = write(tmp_path, "late.csv", head.encode() + "高血压,头痛\n".encode("gb18030"))
    assert read_columns(path) == ["question", "answer"]
    assert open_source(path).encoding == "gb18030"  # open_source decides on the whole file


def test_detect_encoding():
    text = "高血压能吃党参吗？"
    assert detect_encoding(text.encode("utf-8")) == "utf-8"
    assert detect_encoding(codecs.BOM_UTF8 + text.encode("utf-8")) == "utf-8-sig"
    assert detect_encoding(text.encode("utf-16")) == "utf-16"
    assert detect_encoding(codecs.BOM_UTF16_BE + text.encode("utf-16-be")) == "utf-16"
    assert detect_encoding(text.encode("gb18030")) == "gb18030"
    assert detect_encoding(text.encode("gbk")) == "gb18030"
    assert detect_encoding(b"plain ascii") == "utf-8"
    assert detect_encoding("question,answer\nhello,world\n".encode("utf-16-le")) == "utf-16-le"
    # A sample cut in the middle of a UTF-8 character is still UTF-8.
    assert detect_encoding(text.encode("utf-8")[:-1]) == "utf-8"


# --------------------------------------------------------------------------- detection & columns


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.json", '[{"instruction": "q", "input": "", "output": "a"}]', "alpaca"),
        ("a.jsonl", '{"conversations": [{"from": "human", "value": "q"}]}\n', "sharegpt"),
        ("a.jsonl", '{"messages": [{"role": "user", "content": "q"}]}\n', "openai"),
        ("a.json", '{"query": "q", "response": "r"}', "query_response"),
        ("a.json", '[{"question": "q", "answer": "a"}]', "question_answer"),
        ("a.json", '[{"Question": "q", "Complex_CoT": "c", "Response": "r"}]', "medical_o1"),
        ("a.json", '{"1": {"QUESTION": "q", "CONTEXTS": [], "LONG_ANSWER": "a"}}', "pubmedqa"),
        ("a.csv", "question,answer\nq,a\n", "csv"),
        ("a.tsv", "question\tanswer\nq\ta\n", "tsv"),
        ("a.txt", "question\tanswer\nq\ta\n", "tsv"),
        ("a.csv", ",Question,A,B,C,D,Answer\n0,q,1,2,3,4,A\n", "mcq"),
        ("a.xml", MEDQUAD, "medquad"),
        ("noext", '[{"instruction": "q", "output": "a"}]', "alpaca"),
    ],
)
def test_detect_format(tmp_path, name, content, expected):
    path = write(tmp_path, name, content)
    assert detect_format(path) == expected
    assert detect_format(path, content) == expected


def test_detect_format_from_a_cut_head(tmp_path):
    # Only the first record is in the head and it is cut off: keys still decide.
    head = '[\n  {\n    "instruction": "q",\n    "input": "",\n    "output": "a very long ans'
    assert detect_format(Path("big.json"), head) == "alpaca"


def test_read_columns(tmp_path):
    path = write(tmp_path, "toyhom.csv", TOYHOM_LIKE, encoding="gb18030")
    assert read_columns(path) == ["department", "title", "ask", "answer"]
    assert read_columns(write(tmp_path, "dup.csv", "q,q,,answer\n1,2,3,4\n")) == ["q", "q.1", "column_3", "answer"]
    assert read_columns(write(tmp_path, "a.jsonl", '{"query": "q", "response": "r"}\n')) == []


def test_an_unpaired_surrogate_escape_is_a_row_error_and_a_paired_one_is_kept(tmp_path):
    path = tmp_path / "surrogates.jsonl"
    path.write_text(
        '{"instruction": "bad \\ud800 text", "output": "x"}\n'
        '{"instruction": "smile \\ud83d\\ude00", "output": "fine"}\n',
        encoding="utf-8",
    )
    first, second = list(open_source(path).records())
    assert isinstance(first, RowIssue) and first.kind == "error" and first.row == 1
    assert "unpaired surrogate" in first.message and "\\ud800" in first.message
    assert isinstance(second, ParsedRecord) and second.instruction == "smile \U0001f600"


def test_a_nul_character_is_a_row_error_naming_the_field_and_the_rest_is_kept(tmp_path):
    """NUL (\\u0000) cannot be stored in a PostgreSQL text or jsonb column: the row is refused
    with the field and position, as an unpaired surrogate is, instead of failing the import."""
    path = tmp_path / "nul.jsonl"
    path.write_text(
        '{"instruction": "ab\\u0000c", "output": "x"}\n'
        '{"instruction": "fine", "output": "ok", "note": {"deep": ["y\\u0000"]}}\n'
        '{"instruction": "kept", "output": "ok"}\n',
        encoding="utf-8",
    )
    first, second, third = items(path)
    assert isinstance(first, RowIssue) and first.kind == "error" and first.row == 1
    assert "'instruction'" in first.message and "NUL" in first.message and "character 3" in first.message
    assert isinstance(second, RowIssue) and second.kind == "error" and "'note'" in second.message
    assert isinstance(third, ParsedRecord) and third.instruction == "kept"


def test_a_nul_character_in_a_pubmedqa_record_is_a_row_error(tmp_path):
    doc = {
        "111": {"QUESTION": "Does X work?", "CONTEXTS": ["c1"], "MESHES": ["m\u0000"], "final_decision": "yes", "LONG_ANSWER": "It does."},
        "2\u00002": {"QUESTION": "Does Y work?", "CONTEXTS": ["c2"], "final_decision": "no", "LONG_ANSWER": "It does not."},
        "333": {"QUESTION": "Does Z work?", "CONTEXTS": ["c3"], "final_decision": "yes", "LONG_ANSWER": "It does."},
    }
    first, second, third = items(write(tmp_path, "ori_pqal.json", json.dumps(doc)))
    assert isinstance(first, RowIssue) and first.kind == "error" and "'MESHES'" in first.message and "NUL" in first.message
    assert isinstance(second, RowIssue) and second.kind == "error" and "'PMID'" in second.message and "\x00" not in second.message
    assert isinstance(third, ParsedRecord) and third.source_ref == "333"


def test_a_nul_character_in_a_csv_cell_is_a_row_error(tmp_path):
    # past the first 64 KiB, where the file-level binary check does not look
    filler = "".join(f"q{i},{'a' * 100}\n" for i in range(700))
    path = write(tmp_path, "nul.csv", "instruction,output\n" + filler + "bad\x00q,answer\nlast,answer\n")
    found = items(path)
    bad = [i for i in found if isinstance(i, RowIssue)]
    assert len(bad) == 1 and bad[0].kind == "error" and "'instruction'" in bad[0].message and "NUL" in bad[0].message
    assert sum(isinstance(i, ParsedRecord) for i in found) == 701
