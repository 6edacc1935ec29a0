"""Work orders (one per department and role of a ticket) and the SLA job table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Written by hand and checked against bot/models.py by tests/integration/test_store.py.
apscheduler_jobs has the column types of APScheduler 3.9's SQLAlchemyJobStore, so the job
store finds the table ready and does not create its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ACTIVE_LEAD = "role = 'lead' AND status IN ('open', 'accepted', 'in_progress')"


def _utc(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("return_reason", sa.String(length=32), nullable=True),
        _utc("created_at"),
        _utc("updated_at"),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_work_orders_attempt")),
        sa.CheckConstraint(
            "role IN ('lead', 'assist', 'verify')", name=op.f("ck_work_orders_role")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'accepted', 'in_progress', 'returned', 'resolved', 'cancelled')",
            name=op.f("ck_work_orders_status"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_work_orders_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
    )
    op.create_index(op.f("ix_work_orders_ticket_id"), "work_orders", ["ticket_id"], unique=False)
    op.create_index(
        "ix_work_orders_assignee_status", "work_orders", ["assignee", "status"], unique=False
    )
    op.create_index(
        "ix_work_orders_department_status", "work_orders", ["department", "status"], unique=False
    )
    op.create_index(
        "uq_work_orders_active_lead",
        "work_orders",
        ["ticket_id"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE_LEAD),
        postgresql_where=sa.text(_ACTIVE_LEAD),
    )
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apscheduler_jobs")),
    )
    op.create_index(
        op.f("ix_apscheduler_jobs_next_run_time"),
        "apscheduler_jobs",
        ["next_run_time"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("apscheduler_jobs")
    op.drop_table("work_orders")
