"""The console's live events: every subscriber gets every event; a stalled one is dropped."""
from __future__ import annotations

import asyncio

import pytest

from bot import console_bus
from bot.console_bus import ConsoleBus

pytestmark = pytest.mark.unit


def test_every_subscriber_gets_every_event_in_order() -> None:
    async def run() -> tuple[list, list]:
        bus = ConsoleBus()
        first, second = bus.subscribe(), bus.subscribe()
        for n in range(3):
            bus.publish({"n": n})
        return ([first.get_nowait() for _ in range(3)], [second.get_nowait() for _ in range(3)])

    first, second = asyncio.run(run())
    assert first == second == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_stalled_subscriber_is_dropped_and_told_to_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console_bus, "SUBSCRIBER_BACKLOG", 3)

    async def run() -> tuple[int, object, list]:
        bus = ConsoleBus()
        stalled, live = bus.subscribe(), bus.subscribe()
        received = []
        for n in range(5):
            bus.publish({"n": n})
            received.append(live.get_nowait())
        items = [stalled.get_nowait() for _ in range(stalled.qsize())]
        return bus.subscribers, items[-1], received

    subscribers, last, received = asyncio.run(run())
    assert subscribers == 1 and last is None
    assert [event["n"] for event in received] == [0, 1, 2, 3, 4]
