"""``GET /events``: time parsing, moby's filter semantics, since/until and the streamed lines."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bulkhead.api.errors import BadRequest
from bulkhead.api.events import EventFilter, parse_time, register_bus, stream_events
from bulkhead.api.routes import Request, Router, StreamResponse
from bulkhead.engine.events import Event, EventBus

S = 1_000_000_000


def ev(
    type: str = "container", action: str = "start", actor: str = "abc123", **attrs: str
) -> Event:
    return Event(type=type, action=action, actor_id=actor, attributes=attrs, time_nano=5 * S)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1700000000", 1700000000 * S),
        ("1700000000.5", 1700000000 * S + 500_000_000),
        ("1700000000.000000001", 1700000000 * S + 1),
        ("1700000000.1234567891", 1700000000 * S + 123456789),  # truncated to nanoseconds
        ("0", 0),
        ("2023-11-14T22:13:20Z", 1700000000 * S),
        ("2023-11-14T22:13:20.123456789Z", 1700000000 * S + 123456789),
        ("2023-11-14T23:13:20+01:00", 1700000000 * S),
    ],
)
def test_parse_time(text: str, nanos: int) -> None:
    assert parse_time(text, "since") == nanos


def test_parse_time_empty_and_bad() -> None:
    assert parse_time(None, "since") is None and parse_time("", "until") is None
    with pytest.raises(BadRequest, match=r"until.*10m"):
        parse_time("10m", "until")  # durations are the CLI's to convert


def test_filter_type_event_scope() -> None:
    f = EventFilter({"type": ["container"], "event": ["start", "die"]})
    assert f(ev()) and f(ev(action="die"))
    assert not f(ev(action="create")) and not f(ev(type="image"))
    assert EventFilter({"scope": ["local"]})(ev())
    assert not EventFilter({"scope": ["swarm"]})(ev())
    assert EventFilter({})(ev())


def test_filter_event_prefix_for_health_and_exec() -> None:
    health = EventFilter({"event": ["health_status"]})
    assert health(ev(action="health_status: healthy"))
    assert not health(ev(action="start"))
    exec_ = EventFilter({"event": ["exec_start", "die"]})
    assert exec_(ev(action="exec_start: sh -c true")) and exec_(ev(action="die"))
    # without one of those three, an event value must be exact
    assert not EventFilter({"event": ["exec"]})(ev(action="exec_start: sh"))


def test_filter_container_by_id_prefix_or_name() -> None:
    web = ev(actor="abcdef0123", name="web-1")
    assert EventFilter({"container": ["abcdef"]})(web)
    assert EventFilter({"container": ["web-1"]})(web)
    assert EventFilter({"container": ["web"]})(web)  # moby's FuzzyMatch: a prefix
    assert EventFilter({"container": ["nope", "web-1"]})(web)
    assert not EventFilter({"container": ["db"]})(web)
    # as in moby the key does not pick the type: a volume event named otherwise fails it
    assert not EventFilter({"container": ["web"]})(ev(type="volume", actor="data"))
    assert EventFilter({"volume": ["data"]})(ev(type="volume", actor="data", driver="local"))


def test_filter_image() -> None:
    run = ev(image="docker.io/library/busybox:latest", name="x")
    assert EventFilter({"image": ["busybox"]})(run)  # the event's name, without tag/registry
    assert EventFilter({"image": ["docker.io/library/busybox:latest"]})(run)
    assert not EventFilter({"image": ["alpine"]})(run)
    tag = ev(type="image", action="tag", actor="sha256:" + "a" * 64, name="busybox:1")
    assert EventFilter({"image": ["busybox:1"]})(tag)
    assert EventFilter({"image": ["busybox"]})(tag)
    assert EventFilter({"image": ["sha256:" + "a" * 64]})(tag)


def test_filter_labels_all_must_match() -> None:
    e = ev(team="a", tier="web", name="x")
    assert EventFilter({"label": ["team"]})(e)
    assert EventFilter({"label": ["team=a", "tier=web"]})(e)
    assert not EventFilter({"label": ["team=a", "tier=db"]})(e)
    assert not EventFilter({"label": ["missing"]})(e)


def test_filter_unknown_key_is_refused() -> None:
    with pytest.raises(BadRequest, match="'colour'"):
        EventFilter({"colour": ["red"]})


def _bus_with(times: list[int]) -> EventBus:
    ticks = iter(times)
    bus = EventBus(clock=lambda: next(ticks))
    for i in range(len(times)):
        bus.emit("container", "start", f"c{i}")
    return bus


async def _collect(stream: object) -> list[str]:
    return [e.actor_id async for e in stream]  # type: ignore[attr-defined]


def test_until_in_the_past_sends_the_matching_history_then_ends() -> None:
    bus = _bus_with([10 * S, 20 * S, 30 * S])

    async def go(since: int | None, until: int) -> list[str]:
        return await _collect(
            stream_events(bus, lambda e: True, since, until, now_nano=lambda: 100 * S)
        )

    assert asyncio.run(go(None, 20 * S)) == ["c0", "c1"]  # no since: the whole past
    assert asyncio.run(go(15 * S, 30 * S)) == ["c1", "c2"]
    assert asyncio.run(go(31 * S, 40 * S)) == []


def test_until_in_the_future_streams_live_events_then_ends() -> None:
    bus = EventBus()

    async def go() -> list[str]:
        now = time.time_ns()
        stream = stream_events(bus, lambda e: e.action != "skip", now, now + S // 2)
        task = asyncio.ensure_future(_collect(stream))
        await asyncio.sleep(0.05)
        bus.emit("container", "start", "live")
        bus.emit("container", "skip", "filtered")
        got = await asyncio.wait_for(task, 30)
        assert not bus._subscribers  # the subscription ended with the stream
        return got

    assert asyncio.run(go()) == ["live"]


def test_handler_streams_json_lines_in_the_clients_version() -> None:
    bus = EventBus()
    bus.emit("container", "start", "abc", {"image": "busybox", "name": "x"})
    bus.emit("image", "pull", "busybox:latest", {"name": "busybox"})
    router = Router()
    register_bus(router, bus)
    handler, _ = router.match("GET", "/events")

    def lines(version: str, **query: str) -> list[dict[str, object]]:
        req = Request("GET", "/events", version, {k: [v] for k, v in query.items()}, {})

        async def go() -> list[bytes]:
            resp = await handler(req)
            assert isinstance(resp, StreamResponse)
            assert resp.content_type == "application/json"
            return [chunk async for chunk in resp.chunks]

        chunks = asyncio.run(go())
        assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)  # one per event
        return [json.loads(c) for c in chunks]

    until = str(time.time() + 0.01)
    new = lines("1.56", since="0", until=until, filters='{"type":["container"]}')
    assert [(m["Type"], m["Action"]) for m in new] == [("container", "start")]
    assert "status" not in new[0]
    old = lines("1.41", since="0", until=until)
    assert [m["status"] for m in old] == ["start", "pull"]
    assert old[0]["from"] == "busybox"


def test_handler_refuses_since_after_until() -> None:
    router = Router()
    register_bus(router, EventBus())
    handler, _ = router.match("GET", "/events")
    req = Request("GET", "/events", "1.56", {"since": ["20"], "until": ["10"]}, {})

    async def go() -> object:
        return await handler(req)

    with pytest.raises(BadRequest, match="cannot be after"):
        asyncio.run(go())
