"""The agents' console on the database: the queue, one conversation, and what an agent does.

Functions take the Session and the clock and never commit; the console handler owns the
transaction, so the change, what the resident is sent (outbox) and the audit entry are
stored together or not at all. A refusal raises `Refused` with the Chinese message the
agent sees; nothing of the refused action is stored.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import handoff
from bot.accounts import Principal
from bot.audit import audit
from bot.community import Community
from bot.conversations import InvalidPhone, normalize_phone, record_outbound
from bot.dispatch import DispatchError, dispatch_ticket, load_learned_routes
from bot.models import (
    URGENCIES,
    Account,
    Conversation,
    Message,
    OutboxMessage,
    Resident,
    Ticket,
    WebSession,
)
from bot.outbox import enqueue
from bot.reports import location_problem, required_fields, resident_for
from bot.texts import text as domain_text
from bot.ticket_view import mask_phone, ticket_as_dict
from bot.tickets import OPEN_STATUSES, STATUS_LABELS, TicketError, correct_ticket, create_ticket
from routing.catalogue import Catalogue
from routing.dispatch import department_name
from routing.roster import Roster

AGENT_ROLES: tuple[str, ...] = ("agent", "supervisor", "admin")
REASON_LABELS = {"life_safety": "生命安全", "distress": "情绪激动", "asked": "主动要求",
                 "fallback": "机器人没听懂", "agent_transfer": "同事转来"}
CHANNEL_LABELS = {"web": "网页", "sms": "短信", "wechat": "微信", "voice": "电话"}
STATE_LABELS = {"bot": "智能助手接待中", "queued": "排队等待", "agent": "人工接待中",
                "closed": "已结束"}
RETURN_TEXT = "已为您转回智能助手，有事随时说。"
MAX_REPLY_CHARS = 1000
PREVIEW_CHARS = 60
# What residents say to reach a person: not worth putting in an order's description.
_HANDOFF_WORDS = frozenset({"转人工", "找人工", "人工客服", "人工", "0", "客服"})
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_LOCATION_PROBLEMS = {"building": "小区里没有这个楼号，请核对。",
                      "unit": "这栋楼没有这个单元，请核对。",
                      "room": "房号不对，请核对（如 501）。"}
_FIELD_NAMES = {"building": "楼号", "unit": "单元", "room": "房号", "phone": "联系电话"}


class Refused(Exception):
    """The action cannot be done; `message` is what the agent is told."""

    def __init__(self, status: int, message: str, *, action: str,
                 conversation_id: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.action = status, message, action
        self.conversation_id = conversation_id
        self.extra = extra


@dataclass
class Delivery:
    """What to send the resident once the transaction is committed."""

    conversation: Conversation
    text: str
    message_id: int
    at: str
    outbox_id: int | None = None  # None for a hotline call: the voice bridge speaks it
    sms_fallback: str | None = None  # the caller's phone, if speaking fails
    extra: dict[str, Any] = field(default_factory=dict)


# --- reading -------------------------------------------------------------------------------


def wait_text(since: datetime | None, now: datetime) -> str:
    """Say how long someone has waited, e.g. 已等12分钟."""
    if since is None:
        return ""
    minutes = max(int((now - since).total_seconds() // 60), 0)
    if minutes < 1:
        return "刚刚转来"
    if minutes < 60:
        return f"已等{minutes}分钟"
    hours, rest = divmod(minutes, 60)
    return f"已等{hours}小时{rest}分钟" if rest else f"已等{hours}小时"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _mask_text(text: str) -> str:
    return _MOBILE.sub(lambda match: mask_phone(match.group(0)) or "", text)


def _names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(Account.id, Account.display_name).where(Account.id.in_(ids)))
    return {account_id: name for account_id, name in rows}


def _resident_label(conversation: Conversation, resident: Resident | None,
                    full: bool) -> str:
    phone = resident.phone if resident is not None and resident.phone else None
    if phone is None and conversation.channel in ("sms", "voice"):
        phone = conversation.sender_key
    if phone:
        return phone if full else (mask_phone(phone) or "")
    return {"web": "网页访客", "wechat": "微信用户"}.get(conversation.channel, "居民")


def _rows(session: Session, conversations: list[Conversation], now: datetime) -> list[dict]:
    ids = [c.id for c in conversations]
    last: dict[int, Message] = {}
    if ids:
        latest = (select(func.max(Message.id)).where(Message.conversation_id.in_(ids),
                                                    Message.direction == "in")
                  .group_by(Message.conversation_id))
        for message in session.execute(select(Message).where(Message.id.in_(latest))).scalars():
            last[message.conversation_id] = message
    names = _names(session, {c.agent_id for c in conversations if c.agent_id})
    resident_ids = {c.resident_id for c in conversations if c.resident_id}
    residents = {r.id: r for r in session.execute(
        select(Resident).where(Resident.id.in_(resident_ids))).scalars()} if resident_ids else {}
    rows = []
    for c in conversations:
        message = last.get(c.id)
        rows.append({
            "id": c.id, "channel": c.channel, "channel_label": CHANNEL_LABELS[c.channel],
            "state": c.state, "reason": c.handoff_reason,
            "reason_label": REASON_LABELS.get(c.handoff_reason or "", "需要人工"),
            "priority": c.queue_priority, "queued_at": _iso(c.queued_at),
            "wait_text": wait_text(c.queued_at or c.started_at, now),
            "agent_id": c.agent_id, "agent_name": names.get(c.agent_id or 0),
            "resident": _resident_label(c, residents.get(c.resident_id or 0), full=False),
            "last_message": _mask_text(message.text[:PREVIEW_CHARS]) if message else "",
            "last_message_at": _iso(message.created_at) if message else None,
        })
    return rows


def queue_rows(session: Session, *, now: datetime) -> list[dict]:
    """The queue, most urgent first, then longest waiting."""
    return _rows(session, handoff.waiting(session), now)


def my_rows(session: Session, *, who: Principal, now: datetime) -> list[dict]:
    """The conversations this agent is handling, latest activity first."""
    mine = session.execute(
        select(Conversation).where(Conversation.state == "agent",
                                   Conversation.agent_id == who.account_id)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())).scalars()
    return _rows(session, list(mine), now)


def colleagues(session: Session, *, who: Principal, now: datetime) -> list[dict]:
    """Other people who can take a conversation, those online first."""
    seen = dict(session.execute(
        select(WebSession.account_id, func.max(WebSession.last_seen_at))
        .where(WebSession.expires_at > now).group_by(WebSession.account_id)).all())
    accounts = session.execute(
        select(Account).where(Account.active.is_(True), Account.role.in_(AGENT_ROLES),
                              Account.id != who.account_id)
        .order_by(Account.display_name)).scalars()
    rows = [{"id": a.id, "display_name": a.display_name, "role": a.role,
             "online": a.id in seen and (now - seen[a.id]).total_seconds() < 300}
            for a in accounts]
    return sorted(rows, key=lambda row: not row["online"])


def load(session: Session, conversation_id: int, *, action: str) -> Conversation:
    """Return the conversation or refuse with 404."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise Refused(404, "找不到这个会话，可能链接有误。", action=action,
                      requested_id=conversation_id)
    return conversation


def _latest_ticket(session: Session, conversation_id: int) -> Ticket | None:
    return session.execute(
        select(Ticket).where(Ticket.conversation_id == conversation_id)
        .order_by(Ticket.id.desc()).limit(1)).scalar_one_or_none()


def _transcript(session: Session, conversation: Conversation, full: bool) -> list[dict]:
    messages = list(session.execute(
        select(Message).where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at, Message.id)).scalars())
    agent_ids = {int(m.payload["agent"]) for m in messages
                 if m.direction == "out" and isinstance(m.payload, dict)
                 and isinstance(m.payload.get("agent"), int)}
    names = _names(session, agent_ids)
    rows = []
    for m in messages:
        agent_id = (m.payload or {}).get("agent") if m.direction == "out" else None
        by = "resident" if m.direction == "in" else ("agent" if agent_id else "bot")
        rows.append({"id": m.id, "direction": m.direction, "by": by,
                     "agent_name": names.get(agent_id) if agent_id else None,
                     "text": m.text if full else _mask_text(m.text), "at": _iso(m.created_at)})
    return rows


def _draft_from_ticket(ticket: Ticket | None, conversation: Conversation,
                       transcript: list[dict]) -> dict[str, Any]:
    said = [m["text"] for m in transcript
            if m["by"] == "resident" and m["text"].strip() not in _HANDOFF_WORDS]
    draft: dict[str, Any] = {"category": None, "building": None, "unit": None, "room": None,
                             "description": "；".join(said[-3:])[:500] or None,
                             "contact_phone": None, "urgency": None}
    if ticket is not None:
        draft.update(category=ticket.category, building=ticket.building, unit=ticket.unit,
                     room=ticket.room, description=ticket.description,
                     contact_phone=ticket.contact_phone, urgency=ticket.urgency)
    if not draft["contact_phone"]:
        resident = conversation.resident
        if resident is not None and resident.phone:
            draft["contact_phone"] = resident.phone
        elif conversation.channel in ("sms", "voice"):
            draft["contact_phone"] = conversation.sender_key
    return draft


def detail(session: Session, *, conversation_id: int, who: Principal, now: datetime,
           catalogue: Catalogue) -> dict[str, Any]:
    """Everything the pane shows; only the owner sees phone numbers in full. Audited."""
    conversation = load(session, conversation_id, action="view_conversation")
    mine = conversation.state == "agent" and conversation.agent_id == who.account_id
    transcript = _transcript(session, conversation, full=mine)
    ticket = _latest_ticket(session, conversation.id)
    draft = _draft_from_ticket(ticket, conversation, transcript)
    if not mine and draft["contact_phone"]:
        draft["contact_phone"] = mask_phone(draft["contact_phone"])
    failed = session.execute(
        select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.conversation_id == conversation.id,
            OutboxMessage.status == "failed")).scalar_one()
    audit(session, who=who, action="view_conversation", now=now,
          conversation_id=conversation.id, ticket_id=ticket.id if ticket else None)
    row = _rows(session, [conversation], now)[0]
    row.update(mine=mine, state_label=STATE_LABELS[conversation.state],
               resident=_resident_label(conversation, conversation.resident, full=mine))
    return {"conversation": row, "messages": transcript, "draft": draft, "undelivered": failed,
            "ticket": ticket_as_dict(ticket, catalogue=catalogue) if ticket else None}


# --- acting --------------------------------------------------------------------------------


def _holder_message(session: Session, conversation: Conversation) -> str:
    if conversation.state == "agent" and conversation.agent_id:
        name = _names(session, {conversation.agent_id}).get(conversation.agent_id, "同事")
        return f"已被{name}接手。"
    if conversation.state == "closed":
        return "居民已离开，这个会话已结束。"
    if conversation.state == "bot":
        return "这个会话已交还智能助手，不在排队中了。"
    return "这个会话还在排队，请先认领。"


def _require_owner(session: Session, conversation: Conversation, who: Principal,
                   action: str) -> None:
    try:
        handoff.require_owner(conversation, who.account_id)
    except handoff.HandoffError:
        message = _holder_message(session, conversation)
        if conversation.state == "agent":
            message = message.removesuffix("。") + "，您不能操作这个会话。"
        raise Refused(409, message, action=action, conversation_id=conversation.id,
                      state=conversation.state, holder=conversation.agent_id) from None


def claim(session: Session, *, conversation_id: int, who: Principal,
          now: datetime) -> dict[str, Any]:
    """Take a queued conversation; of two agents at the same instant exactly one wins."""
    conversation = load(session, conversation_id, action="claim")
    try:
        handoff.claim(session, conversation_id=conversation_id, agent_id=who.account_id, now=now)
    except handoff.HandoffError:
        session.refresh(conversation)
        raise Refused(409, _holder_message(session, conversation), action="claim",
                      conversation_id=conversation_id, state=conversation.state,
                      holder=conversation.agent_id) from None
    session.refresh(conversation)
    audit(session, who=who, action="claim", now=now, conversation_id=conversation_id,
          reason=conversation.handoff_reason)
    return {"conversation_id": conversation_id, "channel": conversation.channel}


def _deliver(session: Session, conversation: Conversation, text: str, *, who: Principal,
             now: datetime, kind: str = "reply") -> Delivery:
    """Store what the resident is sent and queue it for their channel."""
    message = record_outbound(session, conversation=conversation, text=text, now=now,
                              payload={"agent": who.account_id})
    session.flush()
    delivery = Delivery(conversation=conversation, text=text, message_id=message.id,
                        at=now.isoformat())
    resident = conversation.resident
    if conversation.channel == "voice":
        phone = resident.phone if resident is not None and resident.phone else None
        delivery.sms_fallback = phone or _phone_or_none(conversation.sender_key)
        return delivery
    row = enqueue(session, channel=conversation.channel, address=conversation.sender_key,
                  text=text, kind=kind, now=now, conversation_id=conversation.id,
                  resident_id=conversation.resident_id)
    session.flush()
    delivery.outbox_id = row.id if row is not None else None
    return delivery


def _phone_or_none(text: str) -> str | None:
    try:
        return normalize_phone(text)
    except InvalidPhone:
        return None


def reply(session: Session, *, conversation_id: int, who: Principal, text: str,
          now: datetime) -> Delivery:
    """Answer the resident in their own channel; only the owner may."""
    text = (text or "").strip()
    if not text:
        raise Refused(400, "请先写好要回复的话。", action="reply",
                      conversation_id=conversation_id)
    if len(text) > MAX_REPLY_CHARS:
        raise Refused(400, f"回复太长了，请控制在{MAX_REPLY_CHARS}字以内。", action="reply",
                      conversation_id=conversation_id)
    conversation = load(session, conversation_id, action="reply")
    _require_owner(session, conversation, who, "reply")
    delivery = _deliver(session, conversation, text, who=who, now=now)
    audit(session, who=who, action="reply", now=now, conversation_id=conversation_id,
          channel=conversation.channel, chars=len(text), message_id=delivery.message_id)
    return delivery


def require_owner(session: Session, *, conversation_id: int, who: Principal,
                  action: str) -> Conversation:
    """Return the conversation if this agent owns it (for typing), else refuse."""
    conversation = load(session, conversation_id, action=action)
    _require_owner(session, conversation, who, action)
    return conversation


def call_transfer_phone(session: Session, *, conversation_id: int, who: Principal,
                        now: datetime) -> str:
    """The agent's own phone, to put their hotline caller through to. Audited."""
    conversation = load(session, conversation_id, action="call_transfer")
    _require_owner(session, conversation, who, "call_transfer")
    account = session.get(Account, who.account_id)
    if conversation.channel != "voice" or account is None or not account.phone:
        raise Refused(409, "这个会话不是电话来的，不能转接。" if conversation.channel != "voice"
                      else "您的账号没有登记电话，无法转接，请联系管理员。",
                      action="call_transfer", conversation_id=conversation_id)
    audit(session, who=who, action="call_transfer", now=now, conversation_id=conversation_id)
    return account.phone


def transfer(session: Session, *, conversation_id: int, who: Principal, to: Any,
             now: datetime) -> dict[str, Any]:
    """Hand an owned conversation to a colleague, who has it at once."""
    conversation = load(session, conversation_id, action="transfer")
    _require_owner(session, conversation, who, "transfer")
    target = session.get(Account, to) if isinstance(to, int) and 0 < to < 2**31 else None
    if target is None or not target.active or target.role not in AGENT_ROLES:
        raise Refused(404, "找不到这位同事，或对方不能接待会话。", action="transfer",
                      conversation_id=conversation_id, to=str(to)[:20])
    if target.id == who.account_id:
        raise Refused(400, "这个会话已经在您手上了，请选一位同事。", action="transfer",
                      conversation_id=conversation_id)
    handoff.transfer(session, conversation=conversation, from_agent=who.account_id,
                     to_agent=target, now=now)
    audit(session, who=who, action="transfer", now=now, conversation_id=conversation_id,
          to=target.id)
    return {"to_id": target.id, "to": target.display_name}


def return_to_bot(session: Session, *, conversation_id: int, who: Principal,
                  now: datetime) -> Delivery:
    """Give the conversation back to the bot and tell the resident so."""
    conversation = load(session, conversation_id, action="return_to_bot")
    _require_owner(session, conversation, who, "return_to_bot")
    handoff.back_to_bot(session, conversation=conversation, agent_id=who.account_id, now=now)
    delivery = _deliver(session, conversation, RETURN_TEXT, who=who, now=now)
    audit(session, who=who, action="return_to_bot", now=now, conversation_id=conversation_id)
    return delivery


def _field(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value[:limit] if value else None


def _check_draft(body: dict[str, Any], *, catalogue: Catalogue, community: Community,
                 conversation_id: int) -> dict[str, Any]:
    def refuse(message: str) -> Refused:
        return Refused(400, message, action="dispatch_draft", conversation_id=conversation_id)

    draft = {"category": _field(body, "category", 32), "building": _field(body, "building", 16),
             "unit": _field(body, "unit", 16), "room": _field(body, "room", 16),
             "description": _field(body, "description", 2000),
             "contact_phone": _field(body, "contact_phone", 32),
             "urgency": _field(body, "urgency", 2)}
    if not draft["category"] or not catalogue.has_category(draft["category"]):
        raise refuse("请选择问题类别。")
    if draft["urgency"] is not None and draft["urgency"] not in URGENCIES:
        raise refuse("紧急程度只能选 P1 到 P4。")
    if not draft["description"]:
        raise refuse("请用一句话写明问题。")
    if draft["contact_phone"]:
        try:
            draft["contact_phone"] = normalize_phone(draft["contact_phone"])
        except InvalidPhone:
            raise refuse("电话号码不对，请填11位手机号或带区号的座机。") from None
    have = {"building": draft["building"], "unit": draft["unit"], "room": draft["room"],
            "phone": draft["contact_phone"]}
    missing = [_FIELD_NAMES[name] for name in required_fields(catalogue, draft["category"])
               if name in have and not have[name]]
    if missing:
        raise refuse("还缺" + "、".join(missing) + "，请问清楚再派单。")
    problem = location_problem(community, building=draft["building"], unit=draft["unit"],
                               room=draft["room"])
    if problem:
        raise refuse(_LOCATION_PROBLEMS[problem])
    return draft


def dispatch_draft(session: Session, *, conversation_id: int, who: Principal,
                   body: dict[str, Any], now: datetime, catalogue: Catalogue,
                   community: Community, roster: Roster,
                   ranking: tuple[tuple[str, float], ...] = ()) -> tuple[dict, Delivery]:
    """Create (or finish) the conversation's order from the edited draft and dispatch it."""
    conversation = load(session, conversation_id, action="dispatch_draft")
    _require_owner(session, conversation, who, "dispatch_draft")
    draft = _check_draft(body, catalogue=catalogue, community=community,
                         conversation_id=conversation_id)
    actor = f"agent:{who.username}"[:64]
    existing = _latest_ticket(session, conversation_id)
    try:
        if existing is not None and existing.status == "new":
            # The bot wrote the order but did not dispatch it: finish that one.
            changes = {k: v for k, v in draft.items() if k != "description" and v is not None}
            correct_ticket(session, ticket=existing, changes=changes, actor=actor, now=now,
                           reason="人工客服核对", catalogue=catalogue)
            ticket = existing
        else:
            if (existing is not None and existing.status in OPEN_STATUSES
                    and body.get("force") is not True):
                raise Refused(409, f"这个会话已有工单{existing.number}"
                              f"（{STATUS_LABELS[existing.status]}），确定要再派一张吗？",
                              action="dispatch_draft", conversation_id=conversation_id,
                              code="duplicate", number=existing.number)
            resident = resident_for(session, now=now, resident_id=conversation.resident_id,
                                    conversation_id=conversation_id,
                                    phone=draft["contact_phone"])
            ticket = create_ticket(
                session, now=now, category=draft["category"],
                description=draft["description"], channel=conversation.channel,
                resident=resident, conversation=conversation, building=draft["building"],
                unit=draft["unit"], room=draft["room"], contact_phone=draft["contact_phone"],
                urgency=draft["urgency"], actor=actor, catalogue=catalogue)
        dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=now,
                        ranking=ranking, learned=load_learned_routes(session, roster=roster),
                        actor=actor)
    except (TicketError, DispatchError, LookupError) as exc:
        raise Refused(400, "工单没能派出，请核对后再试。", action="dispatch_draft",
                      conversation_id=conversation_id, error=str(exc)[:200]) from None
    text = domain_text("utter_ticket_created", number=ticket.number,
                       department=department_name(catalogue, ticket.lead_department))
    delivery = _deliver(session, conversation, text, who=who, now=now)
    audit(session, who=who, action="dispatch_draft", now=now, conversation_id=conversation_id,
          ticket_id=ticket.id, number=ticket.number)
    return ticket_as_dict(ticket, catalogue=catalogue), delivery
