"""An agent answers a hotline caller: spoken into the live call, or texted once it has ended.

While the caller is still on the line (a VoiceCall row for the conversation with no
ended_at), the agent's text replaces what the call is doing, through Twilio's REST API
(`calls(sid).update(twiml=...)`): it is read slowly in Mandarin, then the call listens
for the caller's answer at /twilio/voice/turn, where the hub stores it for the agent.
A call that has ended by then gets the text by SMS through the outbox instead. The agent
can also put a live call through to their own phone.

Twilio's REST client is synchronous (requests), so each request runs in a worker thread.
Its failures become VoiceBridgeError, whose `chinese` the console shows the agent.
Codes, as documented: 21220 "Invalid call state" (the call is no longer in progress:
https://www.twilio.com/docs/api/errors/21220); TwiML sent inline may be at most 4000
characters (error 32018) and its action URLs must be absolute (error 15004).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import requests
from aiohttp import web
from sqlalchemy import select
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from bot.app import App
from bot.db import session_scope
from bot.models import Conversation, Resident, VoiceCall
from bot.outbox import Undeliverable, enqueue
from bot.senders.twilio_sms import BaseUrlHttpClient, e164
from bot.settings import TwilioSettings
from bot.webhooks.voice import DIAL, TURN, speakable
from bot.webkeys import APP, OUTBOX
from channels import twilio_voice as tv

log = logging.getLogger(__name__)

__all__ = ["ANSWER_PROMPT", "SMS_PREFIX", "VoiceBridgeError", "render_agent_reply", "speak",
           "transfer_call"]

ANSWER_PROMPT = "您可以直接说话回复。"
SMS_PREFIX = "工作人员回复您："
TWIML_MAX_CHARS = 4000
INVALID_CALL_STATE = 21220
NOT_FOUND = 20404


class VoiceBridgeError(RuntimeError):
    """The hotline could not carry the agent's reply; `chinese` says so to the agent.

    `status` is the HTTP status the console should answer with: 502 when Twilio failed,
    409 or 422 when the request itself cannot work.
    """

    def __init__(self, message: str, *, chinese: str, status: int = 502) -> None:
        super().__init__(message)
        self.chinese = chinese
        self.status = status


class _CallOver(Exception):
    """Twilio says the call is no longer in progress."""


@dataclass(frozen=True)
class _Target:
    conversation_id: int
    resident_id: int | None
    call_sid: str | None  # the live call, if any
    phone: str | None  # where an SMS reaches the caller


def render_agent_reply(text: str, *, action_url: str,
                       voice: tv.MandarinVoice = tv.MANDARIN) -> str:
    """Read the agent's words slowly, then listen for the caller's answer at action_url."""
    return tv.render_gather(ANSWER_PROMPT, action_url=action_url, attempt=0, voice=voice,
                            before=text)


async def speak(app: web.Application | App, conversation: Conversation | int,
                text: str) -> str:
    """Say text to the hotline caller ("spoken"), or text it to them if they hung up ("sms")."""
    current, outbox = _parts(app)
    words = (text or "").strip()
    if not words:
        raise VoiceBridgeError("nothing to say", chinese="回复内容是空的。", status=422)
    target = await asyncio.to_thread(_target, current, _id(conversation))
    if target.call_sid is not None:
        settings = _twilio(current)
        twiml = render_agent_reply(speakable(words), action_url=_public(current, TURN))
        if len(twiml) > TWIML_MAX_CHARS:
            raise VoiceBridgeError(
                f"{len(twiml)} characters of TwiML, Twilio takes {TWIML_MAX_CHARS}",
                chinese="这段话太长，电话里念不完，请分几次回复。", status=422)
        try:
            await asyncio.to_thread(_update_call, settings, target.call_sid, twiml)
        except _CallOver:
            await asyncio.to_thread(_mark_ended, current, target.call_sid)
        else:
            await asyncio.to_thread(_save_prompt, current, target.call_sid, words)
            return "spoken"
    if not target.phone:
        raise VoiceBridgeError(
            f"conversation {target.conversation_id} has no caller number to text",
            chinese="来电已挂断，对方号码未显示，无法发短信，请记下后续回访。", status=409)
    await asyncio.to_thread(_enqueue_sms, current, target, SMS_PREFIX + words)
    if outbox is not None:
        outbox.kick()
    return "sms"


async def transfer_call(app: web.Application | App, conversation: Conversation | int,
                        phone: str) -> bool:
    """Put the live call through to phone; False if the caller has already hung up."""
    current, _ = _parts(app)
    if not (phone or "").strip():
        raise VoiceBridgeError("no phone to transfer to",
                               chinese="您的账号没有登记电话，无法转接，请联系管理员。", status=422)
    try:
        number = e164(phone)
    except Undeliverable as exc:
        raise VoiceBridgeError(str(exc), chinese="这个电话号码打不通，请检查后再试。",
                               status=422) from exc
    target = await asyncio.to_thread(_target, current, _id(conversation))
    if target.call_sid is None:
        return False
    settings = _twilio(current)
    twiml = tv.render_transfer_to_human(number, action_url=_public(current, DIAL))
    try:
        await asyncio.to_thread(_update_call, settings, target.call_sid, twiml)
    except _CallOver:
        await asyncio.to_thread(_mark_ended, current, target.call_sid)
        return False
    await asyncio.to_thread(_save_step, current, target.call_sid, "transfer")
    return True


# --- helpers -------------------------------------------------------------------------------


def _parts(app: web.Application | App) -> tuple[App, Any | None]:
    """The App, and the outbox to kick when there is one (the hub's aiohttp app has it)."""
    if isinstance(app, App):
        return app, None
    return app[APP], app.get(OUTBOX)


def _id(conversation: Conversation | int) -> int:
    return conversation.id if isinstance(conversation, Conversation) else int(conversation)


def _twilio(app: App) -> TwilioSettings:
    if app.settings.twilio is None:
        raise VoiceBridgeError("Twilio is not configured (TWILIO_ACCOUNT_SID and friends)",
                               chinese="电话线路没有开通，无法在通话里回复。", status=409)
    return app.settings.twilio


def _public(app: App, path: str) -> str:
    base = app.settings.public_base_url.rstrip("/")
    if not base:
        raise VoiceBridgeError(
            "PUBLIC_BASE_URL is not set; Twilio needs absolute action URLs (error 15004)",
            chinese="系统没有配置对外地址，无法在通话里回复，请联系管理员。", status=409)
    return base + path


def _target(app: App, conversation_id: int) -> _Target:
    """Find the conversation's live call and the number an SMS would reach."""
    with session_scope(app.sessions) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            raise VoiceBridgeError(f"no conversation {conversation_id}",
                                   chinese="找不到这个会话。", status=404)
        if conversation.channel != "voice":
            raise VoiceBridgeError(f"conversation {conversation_id} is {conversation.channel}",
                                   chinese="这个会话不是电话来的。", status=409)
        calls = list(session.execute(
            select(VoiceCall).where(VoiceCall.conversation_id == conversation_id)
            .order_by(VoiceCall.started_at.desc(), VoiceCall.call_sid)).scalars())
        live = next((call for call in calls if call.ended_at is None), None)
        resident = (session.get(Resident, conversation.resident_id)
                    if conversation.resident_id else None)
        phone = next((call.caller for call in calls if call.caller), None) or (
            resident.phone if resident is not None else None)
        return _Target(conversation_id, conversation.resident_id,
                       live.call_sid if live else None, phone)


def _client(settings: TwilioSettings) -> Client:
    return Client(settings.account_sid, settings.auth_token.reveal(),
                  http_client=BaseUrlHttpClient(settings.api_base),
                  environment={"TWILIO_ACCOUNT_SID": settings.account_sid})


def _update_call(settings: TwilioSettings, call_sid: str, twiml: str) -> None:
    """Replace what the live call is doing; _CallOver if it has ended."""
    client = _client(settings)
    try:
        client.calls(call_sid).update(twiml=twiml)
    except TwilioRestException as exc:
        if exc.code in (INVALID_CALL_STATE, NOT_FOUND) or exc.status == 404:
            raise _CallOver(str(exc)) from exc
        log.warning("Twilio refused to update call %s: HTTP %s code %s", call_sid,
                    exc.status, exc.code)
        raise VoiceBridgeError(
            f"Twilio refused the call update: HTTP {exc.status}, code {exc.code}",
            chinese=f"电话线路拒绝了这次操作（代码{exc.code or exc.status}），请稍后再试，或改发短信。",
        ) from exc
    except requests.RequestException as exc:
        raise VoiceBridgeError(f"Twilio unreachable: {type(exc).__name__}",
                               chinese="电话线路暂时连不上，请稍后再试。") from exc
    except (TwilioException, ValueError) as exc:
        raise VoiceBridgeError(f"Twilio answered something unreadable: {exc}",
                               chinese="电话线路回应异常，请稍后再试。") from exc
    finally:
        session = getattr(client.http_client, "session", None)
        if session is not None:
            session.close()


def _mark_ended(app: App, call_sid: str) -> None:
    # The status callback never came (or not yet): Twilio's word is final.
    with session_scope(app.sessions) as session:
        call = session.get(VoiceCall, call_sid)
        if call is not None and call.ended_at is None:
            call.ended_at = call.updated_at = app.clock()


def _save_prompt(app: App, call_sid: str, words: str) -> None:
    # If the caller stays silent, the hotline repeats the agent's words, not the bot's.
    with session_scope(app.sessions) as session:
        call = session.get(VoiceCall, call_sid)
        if call is not None:
            call.last_prompt, call.failures, call.updated_at = words, 0, app.clock()


def _save_step(app: App, call_sid: str, step: str) -> None:
    with session_scope(app.sessions) as session:
        call = session.get(VoiceCall, call_sid)
        if call is not None:
            call.step, call.updated_at = step, app.clock()


def _enqueue_sms(app: App, target: _Target, text: str) -> None:
    assert target.phone is not None
    with session_scope(app.sessions) as session:
        enqueue(session, channel="sms", address=target.phone, text=text, kind="reply",
                now=app.clock(), conversation_id=target.conversation_id,
                resident_id=target.resident_id)
