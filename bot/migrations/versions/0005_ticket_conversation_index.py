"""Index tickets by conversation: the hub looks for a just-created order on every turn.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Checked against bot/models.py by tests/integration/test_store.py.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_tickets_conversation_id"), "tickets", ["conversation_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tickets_conversation_id"), table_name="tickets")
