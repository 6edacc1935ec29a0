"""Pure helpers behind the hub, the web API and the dialogue."""
from __future__ import annotations

import pytest

from actions.followup import addition_in
from actions.handoff import consecutive_fallbacks
from bot.community import CommunityError, load_community
from bot.hub import clean_text
from bot.reports import ReportDraft, location_problem, required_fields, summary
from bot.triage import triage
from bot.web import BadRequest, parse_message_request
from routing.catalogue import default_catalogue

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw, cleaned", [
    ("  电梯坏了  ", "电梯坏了"),
    ("电梯\x00坏\x07了", "电梯 坏 了"),
    ("a\u202eb\u200bc", "a b c"),
    ("第一行\r\n第二行", "第一行 第二行"),
    ("", ""),
])
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_message_request_validation() -> None:
    inbound = parse_message_request({"channel": "sms", "sender": "13800000000", "text": "你好"})
    assert inbound.phone == "13800000000" and inbound.channel == "sms"
    web = parse_message_request({"channel": "web", "sender": "web-abc", "text": "你好"})
    assert web.phone is None
    for bad in (None, [], {"channel": "fax", "sender": "1"}, {"sender": "a b"},
                {"sender": "x", "text": 5}, {"sender": "x", "text": "a" * 20_001},
                {"sender": "x", "message_id": 7}):
        with pytest.raises(BadRequest):
            parse_message_request(bad)


def test_required_fields_follow_where_the_problem_is() -> None:
    catalogue = default_catalogue()
    assert required_fields(catalogue, "water_leak") == [
        "building", "unit", "room", "phone", "time_window"]
    assert required_fields(catalogue, "elevator_fault") == ["building", "unit", "phone"]
    assert required_fields(catalogue, "public_facility") == ["building", "phone"]
    assert required_fields(catalogue, "government_service") == ["phone"]
    assert required_fields(catalogue, "no_such_category") == ["phone"]


def test_location_must_exist_in_the_community() -> None:
    community = load_community()
    assert location_problem(community, building="5", unit="2", room="501") is None
    assert location_problem(community, building="99", unit=None, room=None) == "building"
    assert location_problem(community, building="5", unit="7", room=None) == "unit"
    assert location_problem(community, building="1", unit=None, room="2501") == "room"
    assert location_problem(community, building="12", unit="3", room="1802") is None


def test_community_file_is_validated(tmp_path) -> None:
    bad = tmp_path / "community.yml"
    bad.write_text("name: x\nbuildings:\n  - {number: 1, units: 0, floors: 3}\n", encoding="utf-8")
    with pytest.raises(CommunityError, match="at least 1 unit"):
        load_community(bad)
    bad.write_text("name: x\nbuildings:\n  - {number: 1, units: 1, floors: 3}\n"
                   "  - {number: 1, units: 2, floors: 3}\n", encoding="utf-8")
    with pytest.raises(CommunityError, match="listed twice"):
        load_community(bad)


def test_summary_reads_back_in_one_short_line() -> None:
    draft = ReportDraft(category="water_leak", description="漏水", channel="sms", building="5",
                        unit="2", room="501", phone="13800000000", time_window="明天上午")
    line = summary(default_catalogue(), draft)
    assert line.startswith("5号楼2单元501，")
    assert "138****0000" in line and "明天上午上门" in line
    assert len("我记下了：" + line + "。对吗？请说“对”或“不对”。") <= 70


@pytest.mark.parametrize("text, addition", [
    ("我还要补充一下", ""),
    ("我还要补充一下，漏水的地方在厨房", "漏水的地方在厨房"),
    ("补充：家里只有老人", "家里只有老人"),
    ("刚才忘了说 门口有条狗", "门口有条狗"),
])
def test_addition_in(text: str, addition: str) -> None:
    assert addition_in(text) == addition


class _Tracker:
    def __init__(self, intents: list[str]) -> None:
        self.events = []
        for name in intents:
            self.events.append({"event": "user", "parse_data": {"intent": {"name": name}}})
            self.events.append({"event": "action", "name": "action_listen"})


def test_consecutive_fallbacks_counts_only_the_latest_run() -> None:
    assert consecutive_fallbacks(_Tracker(["greet", "nlu_fallback"])) == 1
    assert consecutive_fallbacks(_Tracker(["nlu_fallback", "greet", "nlu_fallback"])) == 1
    assert consecutive_fallbacks(_Tracker(["greet", "nlu_fallback", "nlu_fallback"])) == 2
    assert consecutive_fallbacks(_Tracker(["greet"])) == 0


def test_triage_uses_catalogue_defaults_and_raises_for_cues() -> None:
    catalogue = default_catalogue()
    parse = {"intent": {"name": "report_problem"},
             "category": {"name": "elevator_fault", "confidence": 0.9},
             "entities": [{"entity": "building", "value": "5"}, {"entity": "unit", "value": "2"}]}
    plain = triage(parse, catalogue, text="5号楼2单元电梯坏了")
    assert (plain.lead_department, plain.urgency, plain.emergency) == ("property", "P2", None)
    assert plain.entities == {"building": "5", "unit": "2"}
    raised = triage(parse, catalogue, text="5号楼2单元电梯坏了 我腿脚不好下不了楼")
    assert raised.urgency == "P1" and raised.urgency_reason
    fire = triage({"intent": {"name": "report_emergency"},
                   "category": {"name": "fire_hazard", "confidence": 0.8}}, catalogue,
                  text="楼道里着火了")
    assert fire.urgency == "P1" and fire.emergency == "fire"
    unknown = triage({"intent": {"name": "greet"}, "category": {"name": "bogus"}}, catalogue,
                     text="你好")
    assert unknown.category == "other" and unknown.lead_department == "residents_committee"
