"""Table-driven tests for nlu.extractors (inputs go through normalize first, as in the pipeline)."""

from __future__ import annotations

import pytest

from nlu.extractors import EXTRACTOR_NAME, extract_entities, find_entities
from nlu.normalize import normalize


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(e.entity, e.value) for e in find_entities(normalize(text))]


CASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("三号楼二单元五零一", [("building", "3"), ("unit", "2"), ("room", "501")]),
    ("喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼", [("building", "5"), ("unit", "2")]),
    ("十二栋一八零二", [("building", "12"), ("room", "1802")]),
    ("3幢", [("building", "3")]),
    ("幺幺号楼", [("building", "11")]),
    ("3号2单元", [("building", "3"), ("unit", "2")]),
    ("3号501", [("building", "3"), ("room", "501")]),
    ("3号楼2门501", [("building", "3"), ("unit", "2"), ("room", "501")]),
    ("3-2-501漏水", [("building", "3"), ("unit", "2"), ("room", "501")]),
    ("3-501", [("building", "3"), ("room", "501")]),
    ("3栋2-501", [("building", "3"), ("unit", "2"), ("room", "501")]),
    ("10号楼1802那个单元", [("building", "10"), ("room", "1802")]),
    ("我家501漏水", [("room", "501")]),
    ("501室", [("room", "501")]),
    ("1202房", [("room", "1202")]),
    ("一千八百零二室", [("room", "1802")]),
    ("18楼的灯坏了", [("floor", "18")]),
    ("3号楼18楼", [("building", "3"), ("floor", "18")]),
    ("我家在十二楼 一二零二", [("floor", "12"), ("room", "1202")]),
    ("二十三层", [("floor", "23")]),
    ("地下一层车库", [("floor", "-1")]),
    ("5楼2单元", [("building", "5"), ("unit", "2")]),
    ("电话13812345678", [("phone", "13812345678")]),
    ("幺三八零零一二三四五六", [("phone", "13800123456")]),
    ("电话138 0012 3456", [("phone", "13800123456")]),
    ("138-0012-3456", [("phone", "13800123456")]),
    ("座机010-12345678", [("phone", "010-12345678")]),
    ("01012345678", [("phone", "010-12345678")]),
    ("075512345678", [("phone", "0755-12345678")]),
    ("电话是84561234", [("phone", "84561234")]),
    ("今天下午三点以后", [("time", "今天下午3点以后")]),
    ("明天上午", [("time", "明天上午")]),
    ("周六", [("time", "周六")]),
    ("下周三上午都在家", [("time", "下周三上午")]),
    ("晚上七点以后都行", [("time", "晚上7点以后")]),
    ("下午两点到四点", [("time", "下午2点到4点")]),
    ("明天3号上午来", [("time", "明天3号上午")]),
    ("10:30以后", [("time", "10:30以后")]),
    ("随时", [("time", "随时")]),
    ("现在就可以来", [("time", "现在")]),
    ("现在", [("time", "现在")]),
    ("下班以后", [("time", "下班以后")]),
    (
        "12栋1802 电话13812345678 明天上午",
        [("building", "12"), ("room", "1802"), ("phone", "13812345678"), ("time", "明天上午")],
    ),
    ("电梯卡在八楼和九楼之间了", [("emergency", "trapped"), ("floor", "8"), ("floor", "9")]),
    ("三号楼有股煤气味", [("building", "3"), ("emergency", "gas")]),
    (
        "我妈住在九号楼二单元四零二 楼上的老是找她麻烦",
        [("building", "9"), ("unit", "2"), ("room", "402")],
    ),
    ("隔壁装修电钻从早上七点钻到现在", [("time", "早上7点")]),
]

NOTHING: list[str] = [
    "现在电梯坏了",
    "打120",
    "每月交300多",
    "交了2000元",
    "2024年",
    "我一直在家",
    "你好",
    "",
    "   ",
    "3号来修",
    "等了30分钟",
    "3.5米",
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_find_entities(text: str, expected: list[tuple[str, str]]) -> None:
    assert _pairs(text) == expected


@pytest.mark.parametrize("text", NOTHING)
def test_find_entities_finds_nothing(text: str) -> None:
    assert _pairs(text) == []


@pytest.mark.parametrize(
    ("text", "entity", "span"),
    [
        ("3号楼2单元501", "building", "3号楼"),
        ("3号楼2单元501", "unit", "2单元"),
        ("3号楼2单元501", "room", "501"),
        ("在501室", "room", "501室"),
        ("电话138 0012 3456", "phone", "138 0012 3456"),
        ("地下1层", "floor", "地下1层"),
        ("今天下午3点以后来", "time", "今天下午3点以后"),
        ("有股煤气味", "emergency", "煤气味"),
    ],
)
def test_entity_spans_index_the_text(text: str, entity: str, span: str) -> None:
    found = [e for e in find_entities(text) if e.entity == entity]
    assert [text[e.start : e.end] for e in found] == [span]


def test_extract_entities_returns_rasa_dicts() -> None:
    entities = extract_entities("3号楼2单元501")
    assert entities[0] == {
        "entity": "building",
        "value": "3",
        "start": 0,
        "end": 3,
        "confidence": 1.0,
        "extractor": EXTRACTOR_NAME,
    }
    assert [e["entity"] for e in entities] == ["building", "unit", "room"]


@pytest.mark.parametrize("text, room", [
    ("五号楼一单元302家里暖气不热", "302"),
    ("五号楼一单元三零二家里暖气不热", "302"),
    ("六号楼一单元302家中停电了", "302"),
    ("我们楼有302家住户", None),
    ("2单元300块钱", None),
])
def test_room_right_after_an_address_is_the_door(text: str, room: str | None) -> None:
    found = [e["value"] for e in extract_entities(normalize(text)) if e["entity"] == "room"]
    assert found == ([room] if room else [])
