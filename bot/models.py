"""ORM models: residents, conversations, messages, tickets, their event log and work orders.

All timestamps are stored in UTC and come back timezone-aware on SQLite and PostgreSQL.
Enumerated columns are plain strings guarded by CHECK constraints, which migrate more
easily than native enum types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, registry, relationship
from sqlalchemy.types import TypeDecorator

CHANNELS: tuple[str, ...] = ("web", "sms", "wechat", "voice")
CONVERSATION_STATES: tuple[str, ...] = ("bot", "queued", "agent", "closed")
DIRECTIONS: tuple[str, ...] = ("in", "out")
URGENCIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
TICKET_STATUSES: tuple[str, ...] = (
    "new",
    "dispatched",
    "accepted",
    "in_progress",
    "resolved",
    "closed",
    "cancelled",
    "reopened",
)
ORDER_ROLES: tuple[str, ...] = ("lead", "assist", "verify")
ORDER_STATUSES: tuple[str, ...] = (
    "open",
    "accepted",
    "in_progress",
    "returned",
    "resolved",
    "cancelled",
)
# Someone still owes work on these; they count towards a person's load.
ACTIVE_ORDER_STATUSES: tuple[str, ...] = ("open", "accepted", "in_progress")

# Stable constraint names let Alembic (and SQLite batch mode) find constraints again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

mapper_registry = registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))
Base: Any = mapper_registry.generate_base()


class NaiveDatetimeError(ValueError):
    """A naive datetime reached the database layer."""


class AppendOnlyError(RuntimeError):
    """Something tried to change or delete a ticket event."""


class UTCDateTime(TypeDecorator):
    """Store aware datetimes as UTC and always return them aware, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(
                f"naive datetime {value!r}; pass an aware one, e.g. datetime.now(timezone.utc)"
            )
        value = value.astimezone(UTC)
        # SQLite keeps text and would drop the offset anyway; store plain UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Resident(Base):
    __tablename__ = "residents"

    id: Mapped[int] = Column(Integer, primary_key=True)
    phone: Mapped[str | None] = Column(String(20), unique=True, nullable=True)
    wechat_openid: Mapped[str | None] = Column(String(64), unique=True, nullable=True)
    display_name: Mapped[str | None] = Column(String(64), nullable=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    conversations: Mapped[list[Conversation]] = relationship(
        "Conversation", back_populates="resident", order_by="Conversation.id"
    )
    tickets: Mapped[list[Ticket]] = relationship(
        "Ticket", back_populates="resident", order_by="Ticket.id"
    )

    def __repr__(self) -> str:
        return f"<Resident {self.id}>"


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        CheckConstraint(_one_of("state", CONVERSATION_STATES), name="state"),
        # At most one open conversation per sender and channel, even under races.
        Index(
            "uq_conversations_open_sender",
            "channel",
            "sender_key",
            unique=True,
            sqlite_where=text("state != 'closed'"),
            postgresql_where=text("state != 'closed'"),
        ),
    )

    id: Mapped[int] = Column(Integer, primary_key=True)
    resident_id: Mapped[int | None] = Column(
        Integer, ForeignKey("residents.id"), nullable=True, index=True
    )
    channel: Mapped[str] = Column(String(16), nullable=False)
    sender_key: Mapped[str] = Column(String(128), nullable=False)
    state: Mapped[str] = Column(String(16), nullable=False, default="bot")
    started_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    last_message_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    # The choices the bot last offered (buttons → "回复1确认"), so "1" can answer them.
    pending_choices: Mapped[list[dict[str, str]] | None] = Column(JSON, nullable=True)
    # The agents' queue: why and how urgently a person is needed, and who has it.
    # agent_id is accounts.id; no foreign key, which SQLite cannot add to a live table.
    handoff_reason: Mapped[str | None] = Column(String(32), nullable=True)
    queue_priority: Mapped[int | None] = Column(Integer, nullable=True)
    queued_at: Mapped[datetime | None] = Column(UTCDateTime(), nullable=True)
    agent_id: Mapped[int | None] = Column(Integer, nullable=True, index=True)

    resident: Mapped[Resident | None] = relationship("Resident", back_populates="conversations")
    messages: Mapped[list[Message]] = relationship(
        "Message", back_populates="conversation", order_by="Message.id"
    )

    def __repr__(self) -> str:
        return f"<Conversation {self.id} {self.channel} {self.state}>"


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_one_of("direction", DIRECTIONS), name="direction"),
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        # Webhook retries carry the same provider id; the second insert must fail.
        UniqueConstraint("channel", "provider_message_id"),
    )

    id: Mapped[int] = Column(Integer, primary_key=True)
    conversation_id: Mapped[int] = Column(
        Integer, ForeignKey("conversations.id"), nullable=False, index=True
    )
    direction: Mapped[str] = Column(String(3), nullable=False)
    channel: Mapped[str] = Column(String(16), nullable=False)
    text: Mapped[str] = Column(Text, nullable=False, default="")
    provider_message_id: Mapped[str | None] = Column(String(128), nullable=True)
    payload: Mapped[dict[str, Any] | None] = Column(JSON, nullable=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    conversation: Mapped[Conversation] = relationship("Conversation", back_populates="messages")

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.direction} {self.channel}>"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint(_one_of("urgency", URGENCIES), name="urgency"),
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        CheckConstraint(_one_of("status", TICKET_STATUSES), name="status"),
        Index("ix_tickets_resident_id_status", "resident_id", "status"),
    )

    id: Mapped[int] = Column(Integer, primary_key=True)
    number: Mapped[str] = Column(String(20), nullable=False, unique=True)
    resident_id: Mapped[int | None] = Column(Integer, ForeignKey("residents.id"), nullable=True)
    conversation_id: Mapped[int | None] = Column(
        Integer, ForeignKey("conversations.id"), nullable=True, index=True
    )
    category: Mapped[str] = Column(String(32), nullable=False, index=True)
    lead_department: Mapped[str] = Column(String(32), nullable=False)
    description: Mapped[str] = Column(Text, nullable=False)
    building: Mapped[str | None] = Column(String(16), nullable=True)
    unit: Mapped[str | None] = Column(String(16), nullable=True)
    room: Mapped[str | None] = Column(String(16), nullable=True)
    floor: Mapped[str | None] = Column(String(16), nullable=True)
    address_text: Mapped[str | None] = Column(String(255), nullable=True)
    contact_phone: Mapped[str | None] = Column(String(20), nullable=True)
    time_window: Mapped[str | None] = Column(String(64), nullable=True)
    urgency: Mapped[str] = Column(String(2), nullable=False)
    urgency_reason: Mapped[str | None] = Column(String(255), nullable=True)
    channel: Mapped[str] = Column(String(16), nullable=False)
    status: Mapped[str] = Column(String(16), nullable=False, index=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    resident: Mapped[Resident | None] = relationship("Resident", back_populates="tickets")
    conversation: Mapped[Conversation | None] = relationship("Conversation")
    events: Mapped[list[TicketEvent]] = relationship(
        "TicketEvent", back_populates="ticket", order_by="TicketEvent.id"
    )
    rating: Mapped[Rating | None] = relationship("Rating", back_populates="ticket", uselist=False)
    work_orders: Mapped[list[WorkOrder]] = relationship(
        "WorkOrder", back_populates="ticket", order_by="WorkOrder.id"
    )

    def __repr__(self) -> str:
        return f"<Ticket {self.number} {self.status}>"


class TicketEvent(Base):
    """One entry of a ticket's append-only history; never updated or deleted."""

    __tablename__ = "ticket_events"
    __table_args__ = (Index("ix_ticket_events_ticket_id_at", "ticket_id", "at"),)

    id: Mapped[int] = Column(Integer, primary_key=True)
    ticket_id: Mapped[int] = Column(Integer, ForeignKey("tickets.id"), nullable=False)
    kind: Mapped[str] = Column(String(32), nullable=False)
    actor: Mapped[str] = Column(String(64), nullable=False)
    data: Mapped[dict[str, Any]] = Column(JSON, nullable=False, default=dict)
    at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    ticket: Mapped[Ticket] = relationship("Ticket", back_populates="events")

    def __repr__(self) -> str:
        return f"<TicketEvent {self.id} {self.kind}>"


@event.listens_for(TicketEvent, "before_update")
def _refuse_event_update(_mapper: Any, _connection: Any, target: TicketEvent) -> None:
    raise AppendOnlyError(
        f"ticket event {target.id} is append-only; record a new event instead of editing it"
    )


@event.listens_for(TicketEvent, "before_delete")
def _refuse_event_delete(_mapper: Any, _connection: Any, target: TicketEvent) -> None:
    raise AppendOnlyError(
        f"ticket event {target.id} is append-only; record a new event instead of deleting it"
    )


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (CheckConstraint("score BETWEEN 1 AND 5", name="score"),)

    id: Mapped[int] = Column(Integer, primary_key=True)
    ticket_id: Mapped[int] = Column(Integer, ForeignKey("tickets.id"), nullable=False, unique=True)
    score: Mapped[int] = Column(Integer, nullable=False)
    comment: Mapped[str | None] = Column(Text, nullable=True)
    at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    ticket: Mapped[Ticket] = relationship("Ticket", back_populates="rating")


class TicketCounter(Base):
    """Last ticket sequence number handed out per Asia/Shanghai calendar day."""

    __tablename__ = "ticket_counters"

    day: Mapped[str] = Column(String(8), primary_key=True)
    value: Mapped[int] = Column(Integer, nullable=False)


class WorkOrder(Base):
    """One department's share of a ticket: the lead, an assisting or a verifying order."""

    __tablename__ = "work_orders"
    __table_args__ = (
        CheckConstraint(_one_of("role", ORDER_ROLES), name="role"),
        CheckConstraint(_one_of("status", ORDER_STATUSES), name="status"),
        CheckConstraint("attempt >= 1", name="attempt"),
        Index("ix_work_orders_assignee_status", "assignee", "status"),
        Index("ix_work_orders_department_status", "department", "status"),
        # A ticket has one owner at a time, even if two returns race each other.
        Index(
            "uq_work_orders_active_lead",
            "ticket_id",
            unique=True,
            sqlite_where=text("role = 'lead' AND status IN ('open', 'accepted', 'in_progress')"),
            postgresql_where=text(
                "role = 'lead' AND status IN ('open', 'accepted', 'in_progress')"
            ),
        ),
    )

    id: Mapped[int] = Column(Integer, primary_key=True)
    ticket_id: Mapped[int] = Column(Integer, ForeignKey("tickets.id"), nullable=False, index=True)
    department: Mapped[str] = Column(String(32), nullable=False)
    role: Mapped[str] = Column(String(8), nullable=False)
    assignee: Mapped[str | None] = Column(String(64), nullable=True)  # None: the department queue
    status: Mapped[str] = Column(String(16), nullable=False)
    attempt: Mapped[int] = Column(Integer, nullable=False, default=1)
    reasons: Mapped[list[str]] = Column(JSON, nullable=False, default=list)
    return_reason: Mapped[str | None] = Column(String(32), nullable=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    ticket: Mapped[Ticket] = relationship("Ticket", back_populates="work_orders")

    def __repr__(self) -> str:
        return f"<WorkOrder {self.id} {self.department} {self.role} {self.status}>"


# APScheduler's SQLAlchemyJobStore keeps SLA jobs here. Declared (with the job store's own
# column types) so migrations create it and the schema check knows it; the job store's
# create-if-missing then does nothing.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


# --- channels: outbox, opt-outs, service windows, identity links, calls, evidence ---------

OUTBOX_CHANNELS: tuple[str, ...] = ("web", "sms", "wechat")
OUTBOX_STATUSES: tuple[str, ...] = ("pending", "sent", "failed")
OUTBOX_KINDS: tuple[str, ...] = ("reply", "status", "rating", "code", "notice")
CALLBACK_STATUSES: tuple[str, ...] = ("open", "done")


class OutboxMessage(Base):
    """A message owed to a resident; delivered (and retried) by the outbox worker.

    Written in the same transaction as the change it reports, so a crash or a provider
    outage delays a message but never loses it. `failed` is kept for agents to see.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_one_of("channel", OUTBOX_CHANNELS), name="channel"),
        CheckConstraint(_one_of("status", OUTBOX_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", OUTBOX_KINDS), name="kind"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = Column(Integer, primary_key=True)
    channel: Mapped[str] = Column(String(16), nullable=False)
    address: Mapped[str] = Column(String(128), nullable=False)
    text: Mapped[str] = Column(Text, nullable=False)
    kind: Mapped[str] = Column(String(16), nullable=False)
    resident_id: Mapped[int | None] = Column(Integer, ForeignKey("residents.id"), nullable=True)
    conversation_id: Mapped[int | None] = Column(
        Integer, ForeignKey("conversations.id"), nullable=True
    )
    ticket_id: Mapped[int | None] = Column(Integer, ForeignKey("tickets.id"), nullable=True)
    # One status update per ticket and event: enqueueing the same key twice is a no-op.
    dedupe_key: Mapped[str | None] = Column(String(128), nullable=True, unique=True)
    status: Mapped[str] = Column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = Column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    last_error: Mapped[str | None] = Column(String(255), nullable=True)
    provider_message_id: Mapped[str | None] = Column(String(128), nullable=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = Column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"<OutboxMessage {self.id} {self.channel} {self.kind} {self.status}>"


class SmsOptOut(Base):
    """A phone number that sent 退订/STOP: no SMS goes to it until it opts in again."""

    __tablename__ = "sms_opt_outs"

    phone: Mapped[str] = Column(String(32), primary_key=True)
    opted_out_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)


class WeChatWindow(Base):
    """One follower's customer-service window: 5 messages within 48 h of their last."""

    __tablename__ = "wechat_windows"

    openid: Mapped[str] = Column(String(64), primary_key=True)
    last_inbound_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    sent_since_inbound: Mapped[int] = Column(Integer, nullable=False, default=0)


class LinkCode(Base):
    """A code sent by SMS to prove a WeChat follower owns a phone number."""

    __tablename__ = "link_codes"

    id: Mapped[int] = Column(Integer, primary_key=True)
    resident_id: Mapped[int] = Column(
        Integer, ForeignKey("residents.id"), nullable=False, index=True
    )
    phone: Mapped[str] = Column(String(20), nullable=False)
    code_hash: Mapped[str] = Column(String(64), nullable=False)
    attempts: Mapped[int] = Column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = Column(UTCDateTime(), nullable=True)


class VoiceCall(Base):
    """One hotline call: where the caller is in the flow, so a hang-up leaves a trace."""

    __tablename__ = "voice_calls"

    call_sid: Mapped[str] = Column(String(64), primary_key=True)
    caller: Mapped[str | None] = Column(String(32), nullable=True)
    conversation_id: Mapped[int | None] = Column(
        Integer, ForeignKey("conversations.id"), nullable=True
    )
    step: Mapped[str] = Column(String(16), nullable=False, default="menu")
    failures: Mapped[int] = Column(Integer, nullable=False, default=0)
    ticket_number: Mapped[str | None] = Column(String(20), nullable=True)
    last_prompt: Mapped[str | None] = Column(Text, nullable=True)
    started_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = Column(UTCDateTime(), nullable=True)


class CallbackTask(Base):
    """Somebody must call this resident back: a hang-up mid-report, or nobody answered."""

    __tablename__ = "callback_tasks"
    __table_args__ = (CheckConstraint(_one_of("status", CALLBACK_STATUSES), name="status"),)

    id: Mapped[int] = Column(Integer, primary_key=True)
    phone: Mapped[str | None] = Column(String(32), nullable=True)
    conversation_id: Mapped[int | None] = Column(
        Integer, ForeignKey("conversations.id"), nullable=True
    )
    call_sid: Mapped[str | None] = Column(String(64), nullable=True, unique=True)
    reason: Mapped[str] = Column(String(32), nullable=False)
    draft: Mapped[dict[str, Any]] = Column(JSON, nullable=False, default=dict)
    status: Mapped[str] = Column(String(16), nullable=False, default="open")
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    done_at: Mapped[datetime | None] = Column(UTCDateTime(), nullable=True)


class Attachment(Base):
    """A photo a resident sent (WeChat image, MMS): evidence for their work order."""

    __tablename__ = "attachments"

    id: Mapped[int] = Column(Integer, primary_key=True)
    conversation_id: Mapped[int] = Column(
        Integer, ForeignKey("conversations.id"), nullable=False, index=True
    )
    message_id: Mapped[int | None] = Column(Integer, ForeignKey("messages.id"), nullable=True)
    ticket_id: Mapped[int | None] = Column(
        Integer, ForeignKey("tickets.id"), nullable=True, index=True
    )
    kind: Mapped[str] = Column(String(16), nullable=False)
    url: Mapped[str | None] = Column(Text, nullable=True)
    media_id: Mapped[str | None] = Column(String(128), nullable=True)
    content_type: Mapped[str | None] = Column(String(64), nullable=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)


# --- the console: accounts, sessions, audit ------------------------------------------------

ROLES: tuple[str, ...] = ("agent", "staff", "supervisor", "admin")


class Account(Base):
    """A person who signs in to the console: an agent, department staff, a supervisor."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)

    id: Mapped[int] = Column(Integer, primary_key=True)
    username: Mapped[str] = Column(String(64), nullable=False, unique=True)
    display_name: Mapped[str] = Column(String(64), nullable=False)
    password_hash: Mapped[str] = Column(String(255), nullable=False)
    role: Mapped[str] = Column(String(16), nullable=False)
    department: Mapped[str | None] = Column(String(32), nullable=True)  # staff, supervisor
    staff_id: Mapped[str | None] = Column(String(64), nullable=True)  # the roster id of staff
    phone: Mapped[str | None] = Column(String(32), nullable=True)  # hotline transfers
    active: Mapped[bool] = Column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)

    def __repr__(self) -> str:
        return f"<Account {self.id} {self.username} {self.role}>"


class WebSession(Base):
    """A signed-in browser: the cookie holds the token, the table only its hash."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = Column(String(64), primary_key=True)
    account_id: Mapped[int] = Column(Integer, ForeignKey("accounts.id"), nullable=False,
                                     index=True)
    csrf_token: Mapped[str] = Column(String(64), nullable=False)
    created_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)


class AuditEntry(Base):
    """Who looked at or did what, on which order or conversation; append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = Column(Integer, primary_key=True)
    account_id: Mapped[int | None] = Column(Integer, ForeignKey("accounts.id"), nullable=True)
    action: Mapped[str] = Column(String(32), nullable=False)
    ticket_id: Mapped[int | None] = Column(Integer, ForeignKey("tickets.id"), nullable=True,
                                           index=True)
    conversation_id: Mapped[int | None] = Column(Integer, ForeignKey("conversations.id"),
                                                 nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = Column(JSON, nullable=False, default=dict)
    at: Mapped[datetime] = Column(UTCDateTime(), nullable=False)


@event.listens_for(AuditEntry, "before_update")
def _refuse_audit_update(_mapper: Any, _connection: Any, target: AuditEntry) -> None:
    raise AppendOnlyError(f"audit entry {target.id} is append-only")
