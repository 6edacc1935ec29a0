"""The audit log: every view of and action on an order or conversation in the console."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.accounts import Principal
from bot.models import AuditEntry


def audit(session: Session, *, who: Principal | None, action: str, now: datetime,
          ticket_id: int | None = None, conversation_id: int | None = None,
          **detail: Any) -> None:
    """Append one entry; call it in the same transaction as the view or action."""
    session.add(AuditEntry(account_id=who.account_id if who else None, action=action[:32],
                           ticket_id=ticket_id, conversation_id=conversation_id,
                           detail=detail, at=now))
