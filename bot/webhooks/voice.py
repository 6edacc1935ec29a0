"""Twilio voice hotline: the call flow a caller in their eighties walks, by key or by voice.

Every POST is checked against X-Twilio-Signature over the public URL before anything is
stored. Where the caller is in the flow lives on a VoiceCall row, so a hang-up in the
middle of a report still leaves a call-back task with what was said. Whatever fails
inside, the caller hears an apology and a person or a promised call back, never silence.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import VoiceResponse

from bot.accounts import agents_online
from bot.app import App
from bot.db import session_scope
from bot.hub import Hub, Outcome
from bot.models import CallbackTask, Conversation, Message, VoiceCall
from bot.rasa_tracker import report_slots
from bot.ticket_view import format_location
from bot.tickets import get_ticket_by_number
from bot.webhooks.twilio_forms import BadForm, read_form, refuse_form, signed_by_twilio
from bot.webkeys import APP, HUB
from channels import twilio_voice as tv

log = logging.getLogger(__name__)

VOICE, MENU, TURN = "/twilio/voice", "/twilio/voice/menu", "/twilio/voice/turn"
READBACK, DIAL, STATUS = "/twilio/voice/readback", "/twilio/voice/dial", "/twilio/voice/status"
# Twilio's voice webhooks are a few hundred bytes; anything near this is not Twilio.
MAX_BODY_BYTES = 16_384
MAX_FIELDS = 100
TRACKER_TIMEOUT_S = 3.0
ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
ANSWERED = frozenset({"completed", "answered"})
QUEUED = ("queued", "agent")  # conversation states in which a person, not the bot, answers

REPORT_PROMPT = "请说一下哪里坏了，在几号楼几单元。说完请稍等。"
CONSULT_PROMPT = "请说一下您想问什么。说完请稍等。"
MORE_PROMPT = "还有别的事，请直接说。找人工，请按零。"
MENU_AGAIN = tv.MENU_OPTIONS + tv.MENU_REPEAT
APOLOGY = "对不起，系统出了点问题。"
# While an agent has the caller (or will soon), the line stays open: a word, then quiet
# listening; what the caller says goes to the agent, silence comes back for another round.
HOLD_TEXT = "好的，工作人员正在回复您，请稍等。"
HOLD_REMINDER = "请稍等。"
HOLD_PAUSE_S = 10
# Queued this long with nobody claiming: put the caller through or promise a call back.
HOLD_LIMIT = timedelta(minutes=10)
HUMAN_REQUEST = "转人工"
STATUS_REQUEST = "查询进度"
_TICKET = re.compile(r"(?:工单号?\s*)?(GD\d{8}-\d{1,4})", re.IGNORECASE)
_MASKED_PHONE = re.compile(r"\d{3}\*{4}(\d{4})")
_CLAUSE_ENDS = "，。！？；,!?;"
_CLAUSE = re.compile(f"(?<=[{_CLAUSE_ENDS}])")


@dataclass(frozen=True)
class Call:
    """What a handler needs of the VoiceCall row, read inside its session."""

    call_sid: str
    caller: str | None
    conversation_id: int | None
    step: str
    ticket_number: str | None
    last_prompt: str | None
    started_at: datetime


@dataclass(frozen=True)
class Turn:
    """One verified webhook: the app objects, what the caller did and the raw form."""

    app: App
    hub: Hub
    voice: tv.VoiceTurn
    form: MultiDict[str]

    def url(self, path: str) -> str:
        return self.app.settings.public_base_url + path

    @property
    def transfer_number(self) -> str:
        twilio = self.app.settings.twilio
        return twilio.transfer_number if twilio else ""


Handler = Callable[[Turn], Awaitable[str]]


def _twiml(xml: str) -> web.Response:
    return web.Response(text=xml, content_type="text/xml", charset="utf-8")


def _route(path: str, handler: Handler) -> web.RouteDef:
    """Wrap a handler: body limits, signature, parsing, and an apology instead of a 500."""

    async def endpoint(request: web.Request) -> web.Response:
        turn: Turn | None = None
        try:
            app, twilio = request.app[APP], request.app[APP].settings.twilio
            try:
                form = await read_form(request, max_bytes=MAX_BODY_BYTES, max_fields=MAX_FIELDS)
            except BadForm as exc:
                return refuse_form(exc)
            if twilio is None or not signed_by_twilio(request, form):
                return web.Response(status=403, text="invalid Twilio signature")
            params = {key: form[key] for key in form}
            if tv.ATTEMPT_PARAM in request.query:
                params[tv.ATTEMPT_PARAM] = request.query[tv.ATTEMPT_PARAM]
            try:
                voice = tv.parse_voice(params)
            except tv.InvalidVoiceRequest as exc:
                return web.Response(status=400, text=str(exc))
            turn = Turn(app=app, hub=request.app[HUB], voice=voice, form=form)
            return _twiml(await handler(turn))
        except Exception:
            log.exception("voice webhook %s failed", path)
            return _twiml(await _apology(turn))

    return web.post(path, endpoint)


async def _apology(turn: Turn | None) -> str:
    """Say sorry slowly, then put the caller through or promise a call back that is stored."""
    response = VoiceResponse()

    def say(text: str) -> None:
        tv.say_slowly(response, text)

    say(APOLOGY)
    if turn is None:
        say(tv.BUSY_NO_CALLBACK_TEXT)
    elif turn.transfer_number:
        say(tv.TRANSFER_TEXT)
        response.dial(turn.transfer_number, action=turn.url(DIAL), method="POST",
                      timeout=tv.DIAL_TIMEOUT_S)
        return str(response)
    else:
        stored = False
        if turn.voice.caller:
            try:
                call = await _save_call(turn, step="callback")
                stored = await _add_callback(turn, call, "error", draft=False)
            except Exception:
                log.exception("could not store a call-back for call %s", turn.voice.call_sid)
        say(tv.BUSY_CALLBACK_TEXT if stored else tv.BUSY_NO_CALLBACK_TEXT)
    response.hangup()
    return str(response)


# --- storage ---------------------------------------------------------------------------


def _view(call: VoiceCall) -> Call:
    return Call(call.call_sid, call.caller, call.conversation_id, call.step, call.ticket_number,
                call.last_prompt, call.started_at)


def _save_call_sync(app: App, voice: tv.VoiceTurn, changes: dict[str, Any]) -> Call:
    now = app.clock()
    with session_scope(app.sessions) as session:
        call = session.get(VoiceCall, voice.call_sid)
        if call is None:
            call = VoiceCall(call_sid=voice.call_sid, caller=voice.caller, step="menu",
                             failures=0, started_at=now, updated_at=now)
            try:
                with session.begin_nested():
                    session.add(call)
            except IntegrityError:  # the same call's status callback got here first
                call = session.get(VoiceCall, voice.call_sid)
                assert call is not None
        call.caller = call.caller or voice.caller
        for name, value in changes.items():
            setattr(call, name, value)
        call.updated_at = now
        session.flush()
        return _view(call)


async def _save_call(turn: Turn, **changes: Any) -> Call:
    """Create or update the call's row with `changes`; return it as it now stands."""
    return await asyncio.to_thread(_save_call_sync, turn.app, turn.voice, changes)


def _add_callback_sync(app: App, call: Call, reason: str, draft: dict[str, Any]) -> bool:
    with session_scope(app.sessions) as session:
        exists = session.execute(
            select(CallbackTask.id).where(CallbackTask.call_sid == call.call_sid)).first()
        if exists:
            return False
        try:
            with session.begin_nested():
                session.add(CallbackTask(phone=call.caller, call_sid=call.call_sid,
                                         conversation_id=call.conversation_id, reason=reason,
                                         draft=draft, status="open", created_at=app.clock()))
        except IntegrityError:  # a concurrent callback for the same call stored it first
            return False
        return True


async def _add_callback(turn: Turn, call: Call, reason: str, *, draft: bool = True) -> bool:
    """Store one call-back task per call (status callbacks repeat); True if this one did."""
    body = await _draft(turn.app, call) if draft else {"step": call.step}
    return await asyncio.to_thread(_add_callback_sync, turn.app, call, reason, body)


def _transcript_sync(app: App, call: Call) -> list[dict[str, str]]:
    if call.conversation_id is None:
        return []
    with session_scope(app.sessions) as session:
        messages = session.execute(
            select(Message).where(Message.conversation_id == call.conversation_id,
                                  Message.created_at >= call.started_at)
            .order_by(Message.created_at, Message.id)).scalars()
        return [{"direction": m.direction, "text": m.text, "at": m.created_at.isoformat()}
                for m in messages]


async def _report_slots(rasa_url: str, conversation_id: int | None) -> dict[str, Any]:
    return await report_slots(rasa_url, conversation_id, timeout_s=TRACKER_TIMEOUT_S)


async def _draft(app: App, call: Call) -> dict[str, Any]:
    """What a person calling back needs: this call's turns and the report so far."""
    transcript = await asyncio.to_thread(_transcript_sync, app, call)
    slots = await _report_slots(app.settings.rasa_url, call.conversation_id)
    return {"step": call.step, "transcript": transcript, "slots": slots}


# --- shared steps ----------------------------------------------------------------------


async def _give_up_or_retry(turn: Turn, *, prompt: str, action: str) -> str:
    """Ask again once; after that, a person, or a stored promise to call back."""
    failures = turn.voice.attempt + 1
    can_call_back = turn.voice.caller is not None
    if failures >= tv.MAX_FAILED_ATTEMPTS:
        if turn.transfer_number:
            await _save_call(turn, step="transfer", failures=failures)
        else:
            call = await _save_call(turn, step="callback", failures=failures)
            if can_call_back:
                await _add_callback(turn, call, "no_input")
    else:
        await _save_call(turn, failures=failures)
    return tv.render_retry(failures, prompt=prompt, action_url=turn.url(action),
                           human_number=turn.transfer_number or None,
                           dial_action_url=turn.url(DIAL), can_call_back=can_call_back)


async def _hub_hears(turn: Turn, text: str) -> Outcome:
    """Pass a key press on to the hub as the words it stands for."""
    inbound = tv.to_inbound(dataclasses.replace(turn.voice, speech=text, digits=None))
    assert inbound is not None
    return await turn.hub.handle(inbound)


async def _transfer(turn: Turn, *, ask_hub: bool, outcome: Outcome | None = None) -> str:
    """Queue the conversation for the agents; hold the line for the console if an agent
    is online, else put the caller through to staff or promise a call back."""
    changes: dict[str, Any] = {}
    if ask_hub:
        outcome = await _hub_hears(turn, HUMAN_REQUEST)
        changes["conversation_id"] = outcome.conversation_id
    if outcome is not None and await _holding(turn, outcome.conversation_id):
        await _save_call(turn, step="held", failures=0, **changes)
        return _hold(turn, speakable(" ".join(outcome.replies)) or HOLD_TEXT)
    if turn.transfer_number:
        await _save_call(turn, step="transfer", failures=0, **changes)
        return tv.render_transfer_to_human(turn.transfer_number, action_url=turn.url(DIAL))
    call = await _save_call(turn, step="callback", failures=0, **changes)
    can_call_back = turn.voice.caller is not None
    if can_call_back:
        await _add_callback(turn, call, "no_agent")
    return tv.render_transfer_to_human(None, can_call_back=can_call_back)


def _holding_sync(app: App, call_sid: str, conversation_id: int | None) -> bool:
    now = app.clock()
    with session_scope(app.sessions) as session:
        if conversation_id is None:
            call = session.get(VoiceCall, call_sid)
            conversation_id = call.conversation_id if call is not None else None
        conversation = session.get(Conversation, conversation_id) if conversation_id else None
        if conversation is None or conversation.state not in QUEUED:
            return False
        if conversation.state == "agent":
            return True
        fresh = conversation.queued_at is None or now - conversation.queued_at < HOLD_LIMIT
        return fresh and agents_online(session, now=now) > 0


async def _holding(turn: Turn, conversation_id: int | None = None) -> bool:
    """True while an agent in the console has this caller, or is online to take them soon."""
    return await asyncio.to_thread(_holding_sync, turn.app, turn.voice.call_sid, conversation_id)


def _hold(turn: Turn, spoken: str) -> str:
    """Keep the caller on the line for the agent: say a word, then listen quietly."""
    return tv.render_gather(spoken, action_url=turn.url(TURN), attempt=None,
                            pause_s=HOLD_PAUSE_S)


async def _ask(turn: Turn, prompt: str, *, step: str | None = None, **changes: Any) -> str:
    """Speak a prompt and listen for the caller's answer at /twilio/voice/turn."""
    if step:
        changes["step"] = step
    await _save_call(turn, last_prompt=prompt, failures=0, **changes)
    return tv.render_gather(prompt, action_url=turn.url(TURN), attempt=0)


def speakable(text: str) -> str:
    """Make a written reply fit for the ear: ticket numbers digit by digit, masked phones
    as their last four digits (TTS would read 138****0000 as asterisks)."""
    text = _TICKET.sub(lambda m: tv.speak_ticket_number(m.group(1)), text)
    return _MASKED_PHONE.sub(lambda m: f"尾号{m.group(1)}", text)


def without_number(replies: list[str], number: str) -> str:
    """Drop the clauses that carry the ticket number; the read-back spells it slowly instead."""
    sentences = [reply if reply[-1:] in _CLAUSE_ENDS else reply + "。" for reply in replies]
    clauses = [clause for clause in _CLAUSE.split("".join(sentences))
               if clause and number not in clause]
    text = "".join(clauses).strip()
    return text[:-1] + "。" if text.endswith(("，", ",")) else text


def _ticket_summary_sync(app: App, number: str) -> str | None:
    with session_scope(app.sessions) as session:
        ticket = get_ticket_by_number(session, number=number)
        if ticket is None:
            return None
        catalogue = app.catalogue
        name = (catalogue.category(ticket.category).short_name
                if catalogue.has_category(ticket.category) else "")
        where = format_location(building=ticket.building, unit=ticket.unit, room=ticket.room,
                                floor=ticket.floor, address_text=ticket.address_text)
        said = "，".join(part for part in (where, name) if part)
        return f"您报修的是{said}。" if said else "您的报修已经登记。"


# --- handlers --------------------------------------------------------------------------


async def incoming(turn: Turn) -> str:
    await _save_call(turn, step="menu", failures=0, ended_at=None)
    return tv.render_menu(action_url=turn.url(MENU), community_name=turn.app.community.name)


async def menu(turn: Turn) -> str:
    action = tv.menu_action(turn.voice.digits) or tv.spoken_menu_action(turn.voice.speech)
    if action == "report":
        return await _ask(turn, REPORT_PROMPT, step="report")
    if action == "consult":
        return await _ask(turn, CONSULT_PROMPT, step="consult")
    if action == "status":
        outcome = await _hub_hears(turn, STATUS_REQUEST)
        if outcome.state in QUEUED:
            await _save_call(turn, conversation_id=outcome.conversation_id)
            return await _transfer(turn, ask_hub=False, outcome=outcome)
        prompt = speakable(" ".join([*outcome.replies, MORE_PROMPT]))
        return await _ask(turn, prompt, step="status", conversation_id=outcome.conversation_id)
    if action == "human":
        return await _transfer(turn, ask_hub=True)
    if action == "repeat":
        await _save_call(turn, step="menu", failures=0)
        return tv.render_gather(MENU_AGAIN, action_url=turn.url(MENU), attempt=0)
    return await _give_up_or_retry(turn, prompt=tv.MENU_OPTIONS, action=MENU)


async def conversation_turn(turn: Turn) -> str:
    voice = turn.voice
    if voice.digits == "0" and not voice.speech:
        return await _transfer(turn, ask_hub=True)
    if voice.digits == "*" and not voice.speech:
        await _save_call(turn, step="menu", failures=0)
        return tv.render_gather(MENU_AGAIN, action_url=turn.url(MENU), attempt=0)
    inbound = tv.to_inbound(voice)
    if inbound is None:
        call = await _save_call(turn)
        if await _holding(turn, call.conversation_id):
            return _hold(turn, HOLD_REMINDER)
        return await _give_up_or_retry(turn, prompt=call.last_prompt or REPORT_PROMPT,
                                       action=TURN)
    held = await _holding(turn)
    outcome = await turn.hub.handle(inbound)
    if outcome.state in QUEUED:
        await _save_call(turn, conversation_id=outcome.conversation_id)
        if held:  # the hub showed it to the agent; the caller waits for their answer
            return _hold(turn, HOLD_TEXT)
        # A life-safety order with nobody online is read back as before; all else goes on.
        if not outcome.ticket_number or await _holding(turn, outcome.conversation_id):
            return await _transfer(turn, ask_hub=False, outcome=outcome)
    number = outcome.ticket_number
    if number:
        summary = speakable(without_number(outcome.replies, number)) or "您的报修已经登记。"
        await _save_call(turn, step="done", ticket_number=number, last_prompt=summary,
                         conversation_id=outcome.conversation_id, failures=0)
        return tv.render_read_back(summary, number, action_url=turn.url(READBACK))
    prompt = speakable(" ".join(outcome.replies)) or CONSULT_PROMPT
    return await _ask(turn, prompt, conversation_id=outcome.conversation_id)


async def read_back(turn: Turn) -> str:
    call = await _save_call(turn)
    if turn.voice.digits == "*" and call.ticket_number:
        summary = await asyncio.to_thread(_ticket_summary_sync, turn.app, call.ticket_number)
        return tv.render_read_back(summary or call.last_prompt or "", call.ticket_number,
                                   action_url=turn.url(READBACK))
    return tv.render_say_and_hangup(tv.GOODBYE_TEXT)


async def dial_result(turn: Turn) -> str:
    status = (turn.form.get("DialCallStatus") or "").strip()
    if status in ANSWERED:
        await _save_call(turn, step="done")
    else:
        call = await _save_call(turn, step="callback")
        await _add_callback(turn, call, "no_answer")
    return tv.render_dial_result(status)


async def call_status(turn: Turn) -> str:
    status = (turn.form.get("CallStatus") or "").strip()
    if status in ENDED:
        call = await _save_call(turn, ended_at=turn.app.clock())
        if call.step != "done" and (call.caller or call.conversation_id):
            await _add_callback(turn, call, "hangup")
    return str(VoiceResponse())


def routes() -> list[web.RouteDef]:
    """The hotline's webhooks; point the Twilio number's voice URL at /twilio/voice."""
    return [
        _route(VOICE, incoming),
        _route(MENU, menu),
        _route(TURN, conversation_turn),
        _route(READBACK, read_back),
        _route(DIAL, dial_result),
        _route(STATUS, call_status),
    ]
