"""curation.lib.identifiers: what is flagged, what is not, masking."""

from __future__ import annotations

import time

import pytest

from curation.lib.identifiers import (
    KINDS,
    Finding,
    find_identifiers,
    is_valid_resident_id,
    mask_identifiers,
)

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def with_check_digit(first17: str) -> str:
    """GB 11643-1999 / ISO 7064 MOD 11-2, computed here independently of the module."""
    remainder = sum(int(d) * w for d, w in zip(first17, WEIGHTS)) % 11
    return first17 + "10X98765432"[remainder]


def wrong_check_digit(first17: str) -> str:
    right = with_check_digit(first17)[-1]
    return first17 + ("0" if right != "0" else "1")


# A made-up number: region 110105, born 1990-03-07, sequence 123.
ID = with_check_digit("11010519900307123")


def x_terminated_id() -> str:
    for sequence in range(1000):
        candidate = with_check_digit(f"44030619851231{sequence:03d}")
        if candidate.endswith("X"):
            return candidate
    raise AssertionError("no X check digit found")  # pragma: no cover


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in find_identifiers(text)]


def test_kinds_are_the_contract():
    assert KINDS == ("resident_id", "mobile", "landline", "email", "record_number")


# --------------------------------------------------------------------------- resident ids


def test_valid_resident_ids():
    assert is_valid_resident_id(ID)
    x_id = x_terminated_id()
    assert is_valid_resident_id(x_id) and is_valid_resident_id(x_id.lower())
    assert is_valid_resident_id("110105900307123")  # legacy 15 digits, born 1990-03-07


@pytest.mark.parametrize(
    "bad",
    [
        wrong_check_digit("11010519900307123"),
        with_check_digit("11010519900230123"),  # 30 February
        with_check_digit("11010519901307123"),  # month 13
        with_check_digit("99010519900307123"),  # no region 99
        with_check_digit("00010519900307123"),  # region 00
        with_check_digit("11010521990307123"),  # born in 2199
        "110105900230123",  # legacy, 30 February
        "1101051990030712",  # 16 digits
        "11010519900307123Y",
        "",
    ],
)
def test_invalid_resident_ids(bad):
    assert not is_valid_resident_id(bad)


def test_resident_id_in_text_is_found_only_with_a_valid_checksum():
    assert find_identifiers(f"患者身份证号：{ID}，女。") == [Finding("resident_id", 7, 25, ID)]
    x_id = x_terminated_id()
    assert kinds(f"ID {x_id} ok") == [("resident_id", x_id)]
    assert kinds(f"身份证{wrong_check_digit('11010519900307123')}") == []
    # Part of a longer digit run is not an id.
    assert kinds(f"订单9{ID}") == []
    assert kinds(f"{ID}7") == []


# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    "text, expected",
    [
        ("电话13812345678", "13812345678"),
        ("手机：138-1234-5678。", "138-1234-5678"),
        ("手机 138 1234 5678", "138 1234 5678"),
        ("请拨+86 139 1234 5678", "+86 139 1234 5678"),
        ("8615912345678", "8615912345678"),
        ("（+86）18612345678", "（+86）18612345678"),
        ("电话：19912345678，谢谢", "19912345678"),
    ],
)
def test_mobile_numbers(text, expected):
    assert kinds(text) == [("mobile", expected)]


@pytest.mark.parametrize(
    "text",
    [
        "12345678901",  # does not start with 13-19
        "10012345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "编号113812345678",
        "数值0.13812345678",
        "13812345678.5",
        "call the toll-free line at 18004516434 for help",
    ],
)
def test_not_mobile_numbers(text):
    assert kinds(text) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("电话010-62345678", "010-62345678"),
        ("(021)62345678-1234", "(021)62345678-1234"),
        ("（0755）23456789", "（0755）23456789"),
        ("0755 2345678 转 123", "0755 2345678 转 123"),
        ("座机0571-8765432", "0571-8765432"),
    ],
)
def test_landline_numbers(text, expected):
    assert kinds(text) == [("landline", expected)]


# --------------------------------------------------------------------------- email / record numbers


def test_email():
    assert kinds("请发到 zhang.san+qa@hospital.com.cn 谢谢") == [("email", "zhang.san+qa@hospital.com.cn")]
    # A mobile number as the local part is one e-mail address, not a phone.
    assert kinds("13812345678@163.com") == [("email", "13812345678@163.com")]
    assert kinds("a@b") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("住院号：ZY20230012", "ZY20230012"),
        ("病历号 123456", "123456"),
        ("门诊号:2023-000123", "2023-000123"),
        ("病案号为A12345", "A12345"),
        ("检查号#778899", "778899"),
        ("ID号：56789", "56789"),
        ("MRN: 00123456", "00123456"),
        ("medical record no. A123456", "A123456"),
        ("Medical Record Number 7654321", "7654321"),
        ("patient ID 7788990", "7788990"),
    ],
)
def test_record_numbers(text, expected):
    [finding] = find_identifiers(text)
    assert (finding.kind, finding.text) == ("record_number", expected)
    assert text[finding.start : finding.end] == expected


@pytest.mark.parametrize("text", ["住院号：pending", "病历号 1234", "MRN: ABCDEFG", "住院号码"])
def test_not_record_numbers(text):
    assert kinds(text) == []


def test_record_label_before_a_valid_resident_id_reports_the_id():
    assert kinds(f"病历号：{ID}") == [("resident_id", ID)]


# --------------------------------------------------------------------------- ordinary medical numbers


@pytest.mark.parametrize(
    "text",
    [
        "空腹血糖 13.5 mmol/L，餐后 18.2mmol/L",
        "血压 150/100mmHg，心率 88次/分",
        "2019-2023年随访，2021年3月复查",
        "阿莫西林 0.5g 每日3次，连用7天",
        "白细胞 12.3×10^9/L，血小板 350×10^9/L",
        "HBV-DNA 2.08×10^7 IU/ml，即 20807000",
        "检查结果2009-10-8，20100918做的肝功",
        "戊肝抗体检查结果是CG14892599",
        "体重 65kg，身高 170cm，BMI 22.5",
        "ICD-10 I10, ORPHA:558, OMIM:154700, HP:0001250",
        "PMID 21645374",
    ],
)
def test_ordinary_medical_numbers_are_not_flagged(text):
    assert find_identifiers(text) == []


# --------------------------------------------------------------------------- ordering and masking


def test_findings_are_sorted_and_do_not_overlap():
    text = f"张三，身份证{ID}，手机13812345678，邮箱a.b@c.com，住院号ZY123456，电话010-62345678。"
    found = find_identifiers(text)
    assert [f.kind for f in found] == ["resident_id", "mobile", "email", "record_number", "landline"]
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))
    assert all(text[f.start : f.end] == f.text for f in found)
    assert mask_identifiers(text) == "张三，身份证[身份证号]，手机[手机号]，邮箱[邮箱]，住院号[病历号]，电话[电话]。"


def test_mask_with_given_findings_and_without_any():
    text = "手机13812345678"
    assert mask_identifiers(text, []) == text
    assert mask_identifiers(text, [Finding("mobile", 2, 13, "13812345678")]) == "手机[手机号]"
    assert mask_identifiers("没有数字") == "没有数字"
    assert find_identifiers("") == []


def test_text_without_digits_or_at_is_cheap():
    text = "高血压患者首先要注意控制食盐摄入量，每天不超过六克。" * 400
    assert find_identifiers(text) == []
    started = time.perf_counter()
    for _ in range(200):
        find_identifiers(text)
    assert time.perf_counter() - started < 1.0  # ~10 µs a call; generous for loaded CI machines
