"""Initial schema: residents, conversations, messages, tickets and their events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written by hand and checked against bot/models.py by tests/integration/test_store.py
(compare_metadata must report no differences). Values are frozen here on purpose:
later model changes need a new revision, not an edit of this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_CHANNELS = "channel IN ('web', 'sms', 'wechat', 'voice')"


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def upgrade() -> None:
    op.create_table(
        "residents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("wechat_openid", sa.String(length=64), nullable=True),
        sa.Column("display_name", sa.String(length=64), nullable=True),
        _utc("created_at"),
        _pk("residents"),
        sa.UniqueConstraint("phone", name=op.f("uq_residents_phone")),
        sa.UniqueConstraint("wechat_openid", name=op.f("uq_residents_wechat_openid")),
    )
    op.create_table(
        "ticket_counters",
        sa.Column("day", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_ticket_counters")),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("sender_key", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _utc("started_at"),
        _utc("last_message_at"),
        sa.CheckConstraint(_CHANNELS, name=op.f("ck_conversations_channel")),
        sa.CheckConstraint(
            "state IN ('bot', 'queued', 'agent', 'closed')", name=op.f("ck_conversations_state")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_conversations_resident_id_residents")
        ),
        _pk("conversations"),
    )
    op.create_index(
        op.f("ix_conversations_resident_id"), "conversations", ["resident_id"], unique=False
    )
    op.create_index(
        "uq_conversations_open_sender",
        "conversations",
        ["channel", "sender_key"],
        unique=True,
        sqlite_where=sa.text("state != 'closed'"),
        postgresql_where=sa.text("state != 'closed'"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        _utc("created_at"),
        sa.CheckConstraint(_CHANNELS, name=op.f("ck_messages_channel")),
        sa.CheckConstraint("direction IN ('in', 'out')", name=op.f("ck_messages_direction")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
        ),
        _pk("messages"),
        sa.UniqueConstraint(
            "channel",
            "provider_message_id",
            name=op.f("uq_messages_channel_provider_message_id"),
        ),
    )
    op.create_index(
        op.f("ix_messages_conversation_id"), "messages", ["conversation_id"], unique=False
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("lead_department", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("building", sa.String(length=16), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.Column("room", sa.String(length=16), nullable=True),
        sa.Column("floor", sa.String(length=16), nullable=True),
        sa.Column("address_text", sa.String(length=255), nullable=True),
        sa.Column("contact_phone", sa.String(length=20), nullable=True),
        sa.Column("time_window", sa.String(length=64), nullable=True),
        sa.Column("urgency", sa.String(length=2), nullable=False),
        sa.Column("urgency_reason", sa.String(length=255), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.CheckConstraint(_CHANNELS, name=op.f("ck_tickets_channel")),
        sa.CheckConstraint(
            "status IN ('new', 'dispatched', 'accepted', 'in_progress', 'resolved', 'closed', "
            "'cancelled', 'reopened')",
            name=op.f("ck_tickets_status"),
        ),
        sa.CheckConstraint("urgency IN ('P1', 'P2', 'P3', 'P4')", name=op.f("ck_tickets_urgency")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_tickets_conversation_id_conversations"),
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_tickets_resident_id_residents")
        ),
        _pk("tickets"),
        sa.UniqueConstraint("number", name=op.f("uq_tickets_number")),
    )
    op.create_index(op.f("ix_tickets_category"), "tickets", ["category"], unique=False)
    op.create_index(
        "ix_tickets_resident_id_status", "tickets", ["resident_id", "status"], unique=False
    )
    op.create_index(op.f("ix_tickets_status"), "tickets", ["status"], unique=False)
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        _utc("at"),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name=op.f("ck_ratings_score")),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_ratings_ticket_id_tickets")
        ),
        _pk("ratings"),
        sa.UniqueConstraint("ticket_id", name=op.f("uq_ratings_ticket_id")),
    )
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        _utc("at"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_events_ticket_id_tickets")
        ),
        _pk("ticket_events"),
    )
    op.create_index(
        "ix_ticket_events_ticket_id_at", "ticket_events", ["ticket_id", "at"], unique=False
    )


def downgrade() -> None:
    op.drop_table("ticket_events")
    op.drop_table("ratings")
    op.drop_table("tickets")
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("ticket_counters")
    op.drop_table("residents")
