"""Callers ring the hotline of the running stack: signed Twilio webhooks over real HTTP.

Each request is signed as Twilio signs it, with twilio's RequestValidator over the public
URL (PUBLIC_BASE_URL + path + query), and sent to the hub's loopback address, as a
reverse proxy would forward it. The caller follows whatever the TwiML says: the next
request goes to the <Gather> action the hub asked for.
"""
from __future__ import annotations

import html
import re
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from bot.db import session_scope
from bot.models import CallbackTask, Conversation, Resident, Ticket, VoiceCall, WorkOrder
from channels.twilio_voice import speak_ticket_number
from tests.e2e.providers import PUBLIC_BASE_URL, TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER

pytestmark = pytest.mark.e2e

_ACTION = re.compile(r'<Gather[^>]* action="([^"]+)"')
_SPOKEN = re.compile(r'<prosody rate="slow">(.*?)</prosody>', re.S)
# What the bot may ask while a report is being collected, and what this caller answers.
ANSWERS = (("对吗", "对"), ("几号楼", "7号楼"), ("几单元", "1单元"), ("门牌", "101"),
           ("电话", "13700000001"), ("什么时候", "明天上午"))


class Caller:
    """One phone call: posts what Twilio would post, following the hub's TwiML."""

    def __init__(self, stack, call_sid: str, phone: str) -> None:
        self.stack, self.call_sid, self.phone = stack, call_sid, phone

    def post(self, path: str, *, token: str = TWILIO_AUTH_TOKEN, **fields: str) -> tuple[int, str]:
        params = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32, "From": self.phone,
                  "To": TWILIO_FROM_NUMBER, "CallStatus": "in-progress", **fields}
        signature = RequestValidator(token).compute_signature(PUBLIC_BASE_URL + path, params)
        request = urllib.request.Request(
            self.stack.base_url + path, data=urlencode(params).encode(),
            headers={"X-Twilio-Signature": signature,
                     "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def answer(self, xml: str, **fields: str) -> str:
        """Reply at the <Gather> action of the last TwiML; return the next TwiML."""
        match = _ACTION.search(xml)
        assert match, f"the hub is not listening: {xml}"
        action = html.unescape(match.group(1))
        assert action.startswith(PUBLIC_BASE_URL + "/twilio/voice/"), action
        status, reply = self.post(action.removeprefix(PUBLIC_BASE_URL), **fields)
        assert status == 200, reply
        # Wherever the hub listens for speech, it listens for Mandarin.
        assert 'input="speech dtmf"' not in reply or 'language="cmn-Hans-CN"' in reply, reply
        return reply


def spoken(xml: str) -> str:
    return "".join(html.unescape(text) for text in _SPOKEN.findall(xml))


def report_until_read_back(caller: Caller, xml: str) -> str:
    """Answer the bot's follow-up questions by voice, confirm with key 1, return the read-back."""
    for _ in range(8):
        said = spoken(xml)
        if "请您记一下" in said:
            return xml
        if "请按一" in said:
            xml = caller.answer(xml, Digits="1")
            continue
        reply = next((answer for question, answer in ANSWERS if question in said), None)
        assert reply, f"unexpected question on the hotline: {said}"
        xml = caller.answer(xml, SpeechResult=reply, Confidence="0.9")
    raise AssertionError(f"no read-back after eight turns: {spoken(xml)}")


def test_whole_call_reports_a_broken_lift_and_hears_the_number(stack):
    caller = Caller(stack, "CA" + "e2e1".rjust(32, "0"), "+8613700000001")
    status, xml = caller.post("/twilio/voice")
    assert status == 200
    assert 'voice="Polly.Zhiyu"' in xml and 'language="cmn-Hans-CN"' in xml
    assert "报修，请按一" in spoken(xml)

    xml = caller.answer(xml, Digits="1")
    assert "哪里坏了" in spoken(xml)
    xml = caller.answer(xml, SpeechResult="7号楼1单元电梯坏了", Confidence="0.93")
    assert "7号楼1单元" in spoken(xml) and "电梯" in spoken(xml), spoken(xml)
    xml = report_until_read_back(caller, xml)

    with session_scope(stack.sessions) as session:
        call = session.get(VoiceCall, caller.call_sid)
        assert call is not None and call.step == "done" and call.ticket_number
        ticket = session.execute(
            select(Ticket).where(Ticket.number == call.ticket_number)).scalar_one()
        assert (ticket.category, ticket.building, ticket.unit, ticket.channel) == (
            "elevator_fault", "7", "1", "voice")
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation.channel == "voice" and conversation.id == call.conversation_id
        resident = session.get(Resident, ticket.resident_id)
        assert resident.phone == "13700000001"
        leads = session.execute(select(WorkOrder).where(
            WorkOrder.ticket_id == ticket.id, WorkOrder.role == "lead")).scalars().all()
        assert [order.department for order in leads] == ["property"]
        number = ticket.number
    # The number is read digit by digit, twice, and never as one long figure.
    assert xml.count(speak_ticket_number(number)) == 2 and number not in xml

    xml = caller.answer(xml, Digits="*")
    assert "您报修的是7号楼1单元" in spoken(xml)
    assert xml.count(speak_ticket_number(number)) == 2
    assert caller.post("/twilio/voice/status", CallStatus="completed")[0] == 200
    with session_scope(stack.sessions) as session:
        assert session.execute(select(CallbackTask).where(
            CallbackTask.call_sid == caller.call_sid)).first() is None


def test_hang_up_after_describing_the_problem_leaves_a_call_back(stack):
    caller = Caller(stack, "CA" + "e2e2".rjust(32, "0"), "+8613700000002")
    _, xml = caller.post("/twilio/voice")
    xml = caller.answer(xml, Digits="1")
    xml = caller.answer(xml, SpeechResult="我家厨房的水管漏水了", Confidence="0.9")
    assert "<Gather" in xml and spoken(xml)
    for _ in range(2):  # Twilio may repeat the status callback
        status, _ = caller.post("/twilio/voice/status", CallStatus="completed")
        assert status == 200

    with session_scope(stack.sessions) as session:
        tasks = session.execute(select(CallbackTask).where(
            CallbackTask.call_sid == caller.call_sid)).scalars().all()
        assert len(tasks) == 1
        task = tasks[0]
        assert (task.reason, task.phone, task.status) == ("hangup", "13700000002", "open")
        said = [turn["text"] for turn in task.draft["transcript"]]
        assert said[0] == "我家厨房的水管漏水了" and len(said) >= 2
        assert task.draft["slots"].get("report_category") == "water_leak", task.draft
        call = session.get(VoiceCall, caller.call_sid)
        assert call.ended_at is not None and task.conversation_id == call.conversation_id


def test_forged_signature_is_refused(stack):
    caller = Caller(stack, "CA" + "e2e3".rjust(32, "0"), "+8613700000003")
    status, _ = caller.post("/twilio/voice", token="not-the-account-token")
    assert status == 403
    with session_scope(stack.sessions) as session:
        assert session.get(VoiceCall, caller.call_sid) is None
