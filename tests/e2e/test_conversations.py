"""Residents talk to the running stack; replies, stored messages and orders are checked."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from bot.models import Conversation, Message, Ticket

pytestmark = pytest.mark.e2e

NUMBER = re.compile(r"GD\d{8}-\d{4}")


def ticket_number(replies: list[str]) -> str:
    found = [m.group(0) for r in replies for m in [NUMBER.search(r)] if m]
    assert found, f"no work order number in {replies}"
    return found[0]


def test_report_by_sms_in_one_breath_then_follow_up(stack):
    sender = "13811110001"
    replies = stack.say(sender, "喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼")
    assert any("5号楼2单元" in r and "电梯" in r and "对吗" in r for r in replies), replies
    assert any("138****0001" in r for r in replies), replies

    replies = stack.say(sender, "对")
    number = ticket_number(replies)
    status, ticket = stack.get(f"/api/tickets/{number}")
    assert status == 200
    assert ticket["category"] == "elevator_fault"
    assert ticket["lead_department"] == "property"
    assert ticket["location"]["building"] == "5" and ticket["location"]["unit"] == "2"
    assert ticket["urgency"] == "P1"  # raised: a resident who cannot use the stairs
    assert ticket["channel"] == "sms"
    assert "13811110001" not in str(ticket)
    # One hop: dispatched at once to the lead and, in parallel, the assisting department.
    assert ticket["status"] == "dispatched" and ticket["hops"] == 1
    orders = {(o["department"], o["role"]) for o in ticket["work_orders"]}
    assert orders == {("property", "lead"), ("elevator_maintenance", "assist")}
    assert all(o["reasons"] for o in ticket["work_orders"])

    replies = stack.say(sender, "我报的电梯修得怎么样了")
    assert any(number in r and "已派单" in r for r in replies), replies

    replies = stack.say(sender, "我还要补充一下 电梯门一直关不上")
    assert any(number in r and "补充" in r for r in replies), replies

    replies = stack.say(sender, "不用修了")
    assert any(number in r and "撤销" in r for r in replies), replies
    replies = stack.say(sender, "对")
    assert any("已撤销" in r for r in replies), replies
    _, ticket = stack.get(f"/api/tickets/{number}")
    assert ticket["status"] == "cancelled"
    kinds = [event["kind"] for event in ticket["events"]]
    assert "info_added" in kinds and "status_changed" in kinds
    assert all(o["status"] == "cancelled" for o in ticket["work_orders"])


def test_report_asks_only_for_what_is_missing_and_accepts_a_correction(stack):
    sender = "13811110002"
    replies = stack.say(sender, "我家卫生间漏水了")
    assert replies == ["请问是几号楼？"], replies
    replies = stack.say(sender, "三号楼二单元五零一")
    # The phone comes with the SMS; a leak is fixed inside the home, so a time is agreed.
    assert any("什么时候上门" in r for r in replies), replies
    replies = stack.say(sender, "明天上午")
    assert any("3号楼2单元501" in r and "明天上午" in r for r in replies), replies
    replies = stack.say(sender, "不对，是七号楼")
    assert any("7号楼2单元501" in r for r in replies), replies
    number = ticket_number(stack.say(sender, "对"))
    _, ticket = stack.get(f"/api/tickets/{number}")
    assert ticket["category"] == "water_leak"
    assert (ticket["location"]["building"], ticket["location"]["unit"],
            ticket["location"]["room"]) == ("7", "2", "501")
    assert ticket["time_window"] == "明天上午"


def test_web_resident_is_asked_for_a_phone(stack):
    sender = "web-e2e-1"
    replies = stack.say(sender, "12号楼的楼道灯不亮了", channel="web")
    assert any("电话" in r for r in replies), replies
    replies = stack.say(sender, "幺三九一二三四五六七八", channel="web")
    assert any("12号楼" in r and "139****5678" in r for r in replies), replies
    number = ticket_number(stack.say(sender, "是的", channel="web"))
    _, ticket = stack.get(f"/api/tickets/{number}")
    assert ticket["category"] == "public_facility" and ticket["channel"] == "web"


def test_life_safety_gets_advice_and_a_p1_order_at_once(stack):
    replies = stack.say("13811110003", "救命啊 电梯里困人了 我在八号楼一单元的电梯里")
    assert any("110" in r or "警铃" in r for r in replies), replies
    number = ticket_number(replies)
    _, ticket = stack.get(f"/api/tickets/{number}")
    assert ticket["category"] == "elevator_trapped"
    assert ticket["urgency"] == "P1"
    assert ticket["lead_department"] == "elevator_maintenance"
    assert "on_duty_alerted" in [event["kind"] for event in ticket["events"]]


def test_gas_smell_is_told_to_leave_and_call_119(stack):
    replies = stack.say("13811110004", "家里好大一股煤气味")
    assert any("119" in r for r in replies), replies
    ticket_number(replies)


def test_a_person_is_one_word_away(stack):
    sender = "13811110005"
    replies = stack.say(sender, "转人工")
    assert any("人工" in r for r in replies), replies
    with stack.sessions() as session:
        state = session.execute(
            select(Conversation.state).where(Conversation.sender_key == sender)
        ).scalar_one()
    assert state == "queued"
    replies = stack.say(sender, "我家水管爆了")
    assert replies == ["您的话已转给人工客服，请稍等，马上有人回复您。"]


def test_two_misunderstandings_lead_to_a_person(stack):
    sender = "13811110006"
    first = stack.say(sender, "zxcv qwer asdf")
    assert any("没听明白" in r for r in first), first
    second = stack.say(sender, "hjkl uiop vbnm")
    assert any("人工" in r for r in second), second


@pytest.mark.parametrize(
    "text",
    ["", "   ", "😀😀😀", "哈" * 5000, "my elevator is broken please help",
     "电梯\x00坏\x07了\u202e", "<xml>&amp;</xml>", "DROP TABLE tickets;--", "🙏🙏 电梯 broken 了 5号楼"],
    ids=["empty", "blank", "emoji", "huge", "english", "control", "markup", "sql", "mixed"],
)
def test_bad_input_gets_a_polite_reply_and_is_stored(stack, text):
    sender = f"bad-{abs(hash(text)) % 10**8}"
    with stack.sessions() as session:
        before = session.execute(select(func.count()).select_from(Message)).scalar_one()
    replies = stack.say(sender, text, channel="web")
    assert replies and all(r.strip() for r in replies), replies
    assert all(re.search(r"[\u4e00-\u9fff]", r) for r in replies), replies
    with stack.sessions() as session:
        inbound = session.execute(
            select(func.count()).select_from(Message).where(Message.direction == "in")
            .join(Conversation).where(Conversation.sender_key == sender)
        ).scalar_one()
        after = session.execute(select(func.count()).select_from(Message)).scalar_one()
    assert inbound == 1
    assert after == before + 1 + len(replies)


def test_changing_the_subject_mid_form_is_answered(stack):
    sender = "13811110007"
    replies = stack.say(sender, "我家暖气不热")
    assert replies == ["请问是几号楼？"], replies
    replies = stack.say(sender, "你是机器人吗")
    assert len(replies) == 2 and replies[-1] == "请问是几号楼？", replies
    replies = stack.say(sender, "算了不用修了")
    assert any("不登记" in r for r in replies), replies


def test_a_provider_retry_is_answered_once(stack):
    first = stack.say("13811110008", "你好", message_id="SM-retry-1")
    assert first
    status, answer = stack.post("/api/messages", {"channel": "sms", "sender": "13811110008",
                                                  "text": "你好", "message_id": "SM-retry-1"})
    assert status == 200 and answer["duplicate"] is True and answer["replies"] == []
    with stack.sessions() as session:
        stored = session.execute(select(func.count()).select_from(Message).where(
            Message.provider_message_id == "SM-retry-1")).scalar_one()
    assert stored == 1


def test_api_errors_are_clear(stack):
    status, answer = stack.get("/api/tickets/GD19990101-0001")
    assert status == 404 and "GD" in answer["error"]
    status, answer = stack.post("/api/messages", None, raw=b"\xff\xfe not json")
    assert status == 400 and "JSON" in answer["error"]
    status, answer = stack.post("/api/messages", {"channel": "fax", "sender": "1", "text": "x"})
    assert status == 400 and "channel" in answer["error"]
    status, answer = stack.post("/api/messages", {"channel": "web", "sender": "a b", "text": "x"})
    assert status == 400 and "sender" in answer["error"]


def test_no_ticket_is_written_without_confirmation(stack):
    sender = "13811110009"
    with stack.sessions() as session:
        before = session.execute(select(func.count()).select_from(Ticket)).scalar_one()
    stack.say(sender, "六号楼一单元302家里停电了 明天下午在家")
    with stack.sessions() as session:
        after = session.execute(select(func.count()).select_from(Ticket)).scalar_one()
    assert after == before


def test_metrics_are_served_from_the_event_log(stack):
    replies = stack.say("13811110010", "五号楼一单元302家里暖气不热 明天上午在家")
    assert any("对吗" in r for r in replies), replies
    number = ticket_number(stack.say("13811110010", "对"))
    status, ticket = stack.get(f"/api/tickets/{number}")
    assert status == 200 and ticket["category"] == "heating"
    status, report = stack.get("/api/metrics")
    assert status == 200 and report["count"] >= 1 and report["hops"]["mean"] >= 1
    status, grouped = stack.get("/api/metrics?by=category")
    assert status == 200 and "heating" in grouped["groups"]
    status, answer = stack.get("/api/metrics?by=colour")
    assert status == 400 and "by must be" in answer["error"]
