"""The event bus: history for ``since``, live delivery, filters, threads, Docker's JSON."""

from __future__ import annotations

import asyncio
import threading

from bulkhead.engine.events import HISTORY, Event, EventBus


def _clock() -> object:
    ticks = iter(range(1_000_000_000, 10**12, 1000))
    return lambda: next(ticks)


def test_history_is_bounded_and_ordered() -> None:
    bus = EventBus()
    for i in range(HISTORY + 10):
        bus.emit("container", "start", f"c{i}")
    past = bus.history()
    assert len(past) == HISTORY
    assert past[0].actor_id == "c10" and past[-1].actor_id == f"c{HISTORY + 9}"


def test_subscribe_replays_since_then_streams_live_without_duplicates() -> None:
    bus = EventBus(clock=_clock())  # type: ignore[arg-type]
    first = bus.emit("container", "create", "a")
    bus.emit("container", "start", "a")

    async def go() -> list[str]:
        got: list[str] = []
        stream = bus.subscribe(since_nano=first.time_nano + 1)

        async def consume() -> None:
            async for event in stream:
                got.append(event.action)
                if len(got) == 3:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        bus.emit("container", "die", "a")
        # from another thread, as the engine's file work does
        t = threading.Thread(target=bus.emit, args=("container", "destroy", "a"))
        t.start()
        t.join()
        await asyncio.wait_for(task, 5)
        await stream.aclose()
        return got

    assert asyncio.run(go()) == ["start", "die", "destroy"]
    assert not bus._subscribers  # the closed subscription is gone


def test_filter_applies_to_history_and_live() -> None:
    bus = EventBus()
    bus.emit("image", "pull", "busybox")
    bus.emit("container", "start", "x")

    async def go() -> list[str]:
        stream = bus.subscribe(lambda e: e.type == "image", since_nano=0)
        first = await anext(stream)
        bus.emit("container", "stop", "x")
        bus.emit("image", "tag", "busybox")
        second = await anext(stream)
        await stream.aclose()
        return [first.action, second.action]

    assert asyncio.run(go()) == ["pull", "tag"]


def test_docker_json_has_legacy_fields_only_before_1_52() -> None:
    event = Event(
        type="container",
        action="die",
        actor_id="abc",
        attributes={"image": "busybox", "name": "web", "exitCode": "3"},
        time_nano=1_700_000_000_123_456_789,
    )
    old = event.to_docker((1, 41))
    assert old["status"] == "die" and old["id"] == "abc" and old["from"] == "busybox"
    assert old["time"] == 1_700_000_000 and old["timeNano"] == 1_700_000_000_123_456_789
    assert old["Actor"] == {"ID": "abc", "Attributes": event.attributes}
    new = event.to_docker((1, 52))
    assert "status" not in new and "from" not in new and new["Action"] == "die"
