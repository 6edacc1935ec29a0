"""Live events for the console: a queued resident wrote, a conversation joined the queue.

In-process publish/subscribe inside the hub process, which both receives residents'
messages and serves the console's websockets. Each subscriber has a bounded queue; one
that falls far behind (a stalled browser) is dropped and reconnects, instead of holding
memory or slowing everyone else.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

SUBSCRIBER_BACKLOG = 1000


class ConsoleBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        """Hand the event to every subscriber now; never blocks the publisher."""
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("console subscriber %d events behind; dropped", queue.qsize())
                self._subscribers.discard(queue)
                queue.get_nowait()  # make room for the end marker
                queue.put_nowait(None)  # tells the subscriber to reconnect
