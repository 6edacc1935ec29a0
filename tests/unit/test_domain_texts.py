"""Every resident-facing text is short enough for one SMS (70 characters) once filled in."""
from __future__ import annotations

import re

import pytest

from bot.texts import domain_texts

pytestmark = pytest.mark.unit

# Typical values for the placeholders, at their longest realistic length.
SAMPLES = {
    "summary": "12号楼3单元1802，电梯故障，电话138****0000，明天上午上门",
    "number": "GD20261128-0007",
    "department": "电梯维保单位",
    "category": "漏水渗水",
    "status": "已办结",
    "detail": "电梯维保单位已接单，会尽快处理。",
    "wait": "15分钟",
    "max_building": "16",
    "location": "12号楼3单元1802",
    "hotline": "0571-88001234",
    "note": "已更换楼道灯泡，请您查看是否正常，谢谢配合。已更换楼道灯泡，请您查",
}
SMS_CHARS = 70


@pytest.mark.parametrize("name", sorted(domain_texts()))
def test_response_fits_one_sms(name: str) -> None:
    text = domain_texts()[name]
    filled = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], text)
    assert len(filled) <= SMS_CHARS, f"{name}: {len(filled)} characters: {filled}"
    assert re.search(r"[\u4e00-\u9fff]", filled), name
    assert "已已" not in filled, f"{name}: a status label already starts with 已: {filled}"
