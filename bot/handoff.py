"""The agents' queue: who waits for a person, how urgently, and who has them.

The bot queues a conversation (the resident asked, the bot failed twice, the resident is
distressed, a life is at risk); an agent claims it — of two agents claiming at once
exactly one wins — answers in the resident's own channel, may pass it to a colleague,
and gives it back to the bot when done. State lives on the conversation row, so every
process (action server, hub, console) sees the same queue.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.accounts import agents_online
from bot.models import Account, Conversation

# Lower is more urgent. A life-safety conversation jumps every queue.
PRIORITIES: dict[str, int] = {
    "life_safety": 0,
    "distress": 1,
    "asked": 2,
    "fallback": 2,
    "agent_transfer": 2,
}
# A rough promise is better than none: minutes an agent spends per conversation.
MINUTES_PER_CONVERSATION = 3
MIN_WAIT_MINUTES = 2


class HandoffError(ValueError):
    """The queue change is not possible now; the message says why."""


class AlreadyClaimed(HandoffError):
    """Another agent took the conversation first."""


def queue(session: Session, *, conversation: Conversation, reason: str, now: datetime) -> int:
    """Put a conversation in the agents' queue; return the estimated wait in minutes.

    A conversation already with an agent stays with them; an already queued one keeps
    its place but moves up if the new reason is more urgent.
    """
    if reason not in PRIORITIES:
        raise HandoffError(f"reason must be one of {', '.join(PRIORITIES)}")
    priority = PRIORITIES[reason]
    if conversation.state == "agent":
        return 0
    if conversation.state == "queued" and conversation.queue_priority is not None:
        if priority < conversation.queue_priority:
            conversation.queue_priority, conversation.handoff_reason = priority, reason
    else:
        conversation.state = "queued"
        conversation.queue_priority, conversation.handoff_reason = priority, reason
        conversation.queued_at = now
        conversation.agent_id = None
    session.flush()
    return estimate_wait(session, conversation=conversation, now=now)


def estimate_wait(session: Session, *, conversation: Conversation, now: datetime) -> int:
    """Minutes until an agent is likely free: conversations ahead, shared by agents online."""
    ahead = session.execute(
        select(func.count()).select_from(Conversation).where(
            Conversation.state == "queued",
            Conversation.id != conversation.id,
            (Conversation.queue_priority < (conversation.queue_priority or 0))
            | ((Conversation.queue_priority == conversation.queue_priority)
               & (Conversation.queued_at <= conversation.queued_at)),
        )
    ).scalar_one()
    agents = max(agents_online(session, now=now), 1)
    return max(MIN_WAIT_MINUTES, round((ahead + 1) * MINUTES_PER_CONVERSATION / agents))


def waiting(session: Session) -> list[Conversation]:
    """The queue, most urgent first, then longest waiting."""
    return list(session.execute(
        select(Conversation).where(Conversation.state == "queued")
        .order_by(Conversation.queue_priority, Conversation.queued_at, Conversation.id)
    ).scalars())


def claim(session: Session, *, conversation_id: int, agent_id: int, now: datetime) -> None:
    """Take a queued conversation; raise AlreadyClaimed if another agent was first.

    One conditional UPDATE decides: of two agents at the same instant, the database lets
    exactly one row change.
    """
    taken = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.state == "queued")
        .values(state="agent", agent_id=agent_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        current = session.get(Conversation, conversation_id)
        if current is not None:
            session.refresh(current)
        if current is None:
            raise HandoffError(f"no conversation {conversation_id}")
        if current.state == "agent" and current.agent_id == agent_id:
            return  # a double click: it is already yours
        holder = session.get(Account, current.agent_id) if current.agent_id else None
        raise AlreadyClaimed(
            f"conversation {conversation_id} is "
            + (f"with {holder.display_name}" if holder else f"{current.state}, not queued"))
    conversation = session.get(Conversation, conversation_id)
    if conversation is not None:
        session.refresh(conversation)


def require_owner(conversation: Conversation, agent_id: int) -> None:
    """Refuse an action on a conversation another agent (or nobody) owns."""
    if conversation.state != "agent" or conversation.agent_id != agent_id:
        raise HandoffError(f"conversation {conversation.id} is not yours; claim it first")


def transfer(session: Session, *, conversation: Conversation, from_agent: int,
             to_agent: Account, now: datetime) -> None:
    """Give an owned conversation to another agent, who gets it at once."""
    require_owner(conversation, from_agent)
    if not to_agent.active or to_agent.role not in ("agent", "supervisor", "admin"):
        raise HandoffError(f"{to_agent.display_name} cannot take conversations")
    conversation.agent_id = to_agent.id


def back_to_bot(session: Session, *, conversation: Conversation, agent_id: int,
                now: datetime) -> None:
    """The agent is done: the bot answers this resident again."""
    require_owner(conversation, agent_id)
    conversation.state = "bot"
    conversation.agent_id = None
    conversation.queue_priority = conversation.handoff_reason = None
    conversation.queued_at = None
