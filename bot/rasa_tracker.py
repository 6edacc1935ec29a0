"""What the bot has gathered so far in a conversation, read from Rasa's tracker API.

The agent console shows it as the draft order; a hotline caller who hangs up mid-report
leaves it in a call-back task. Rasa runs with --enable-api; when it is down or slow the
draft is simply empty and the transcript still tells the story.
"""
from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TRACKER_TIMEOUT_S = 3.0


async def report_slots(rasa_url: str, conversation_id: int | None, *,
                       timeout_s: float = TRACKER_TIMEOUT_S) -> dict[str, Any]:
    """Return the report_* slots Rasa has filled for conversation `conversation_id`."""
    if conversation_id is None:
        return {}
    url = f"{rasa_url.rstrip('/')}/conversations/conv-{conversation_id}/tracker"
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as client, client.get(url) as answer:
            if answer.status != 200:
                log.warning("rasa tracker %s answered HTTP %s", conversation_id, answer.status)
                return {}
            tracker = await answer.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("rasa tracker %s unavailable: %s", conversation_id, exc)
        return {}
    slots = tracker.get("slots") if isinstance(tracker, dict) else None
    if not isinstance(slots, dict):
        return {}
    return {name: value for name, value in slots.items()
            if name.startswith("report_") and value not in (None, "")}
