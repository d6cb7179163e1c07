"""``GET /events``: the daemon's event stream, as ``docker events`` reads it.

The answer is Docker's *streaming JSON*: one ``EventMessage`` object per
line (``Content-Type: application/json``, chunked), each line sent as soon
as its event happens. The events come from the engine's
:class:`~bulkhead.engine.events.EventBus`.

Query parameters (as dockerd's ``getEvents``):

``since``
    events from this time on, out of the bus's recent past (its last 256
    events), before the live ones. A time is unix seconds with an optional
    fraction (``1700000000.123456789``, what the docker CLI sends: it turns
    ``10m`` or an RFC 3339 date into that itself); RFC 3339 is accepted too.
``until``
    the stream's end. In the past: the matching part of the past is sent,
    then the response ends. In the future: the stream ends at that time.
    With ``until`` and no ``since``, the whole kept past up to ``until``.
``filters``
    JSON ``{"key": ["value", ...]}``: values of one key are alternatives
    (OR), keys must all match (AND), except ``label``, where every value must
    match. See :class:`EventFilter` for each key.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

from bulkhead.api.errors import BadRequest
from bulkhead.api.routes import Request, Router, StreamResponse, parse_version
from bulkhead.engine.events import Event, EventBus

if TYPE_CHECKING:
    from bulkhead.engine.context import Services

#: the ``filters`` keys ``GET /events`` knows (moby's event filter, without swarm's
#: ``node``/``service``/``secret``/``config``, which match nothing here)
FILTER_KEYS = frozenset(
    {
        "container",
        "daemon",
        "event",
        "image",
        "label",
        "network",
        "plugin",
        "scope",
        "type",
        "volume",
        "node",
        "service",
        "secret",
        "config",
    }
)

#: event types whose filter key matches the actor's id or name (by prefix, as moby's FuzzyMatch)
_NAMED_TYPES = (
    "container",
    "daemon",
    "network",
    "plugin",
    "volume",
    "node",
    "service",
    "secret",
    "config",
)

#: an ``event`` filter naming one of these matches by prefix (``health_status`` matches
#: ``health_status: healthy``; moby #25798), and then every ``event`` value does
_PREFIX_ACTIONS = frozenset({"health_status", "exec_create", "exec_start"})


def parse_time(value: str | None, name: str) -> int | None:
    """A ``since``/``until`` value as nanoseconds since the epoch (``None`` when empty).

    Docker's wire form is ``seconds[.fraction]`` (up to nine digits of
    fraction); RFC 3339 (``2024-01-02T03:04:05.5Z``) is taken as well.
    """
    if value is None or value == "":
        return None
    seconds, dot, fraction = value.partition(".")
    if seconds.lstrip("-").isdigit() and (not dot or fraction.isdigit()):
        nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
        return int(seconds) * 1_000_000_000 + (nanos if not seconds.startswith("-") else -nanos)
    return _rfc3339_nanos(value, name)


def _rfc3339_nanos(value: str, name: str) -> int:
    text = value.strip()
    fraction = ""
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat keeps microseconds only: take the fraction apart
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, text = rest[:digits], head + rest[digits:]
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"invalid value for {name}: {value!r} (unix seconds with an optional fraction, "
            "e.g. 1700000000.5, or an RFC 3339 time)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    whole = int(when.replace(microsecond=0).timestamp())
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else when.microsecond * 1000
    return whole * 1_000_000_000 + nanos


def _familiar_name(image: str) -> str:
    """``docker.io/library/busybox:latest`` → ``busybox`` (moby's ``stripTag``)."""
    from bulkhead.images.reference import parse_reference

    try:
        return parse_reference(image, default_tag=None).familiar_name()
    except Exception:  # not a reference (an id): compared as it is
        return image


class EventFilter:
    """moby's event filter (``daemon/events/filter.go``) over :class:`Event`.

    ``type``, ``scope``
        exact.
    ``event``
        the action, exact; by prefix when a value is ``health_status``,
        ``exec_create`` or ``exec_start`` (their actions carry a suffix).
    ``container``, ``volume``, ``network``, ``daemon``, ``plugin``...
        a prefix of the actor's id or of its ``name`` attribute (a full id
        or name is a prefix too). As in moby the key does not select the
        event type: ``container=web`` passes any actor named ``web...``.
    ``image``
        the image's id or name (image events: the actor id and ``name``
        attribute; container events: the ``image`` attribute), each also
        without its tag and registry (``busybox`` matches an event of
        ``busybox:latest``; the filter's values are taken as they are).
    ``label``
        ``key`` or ``key=value``; every value must match the attributes.
    """

    def __init__(self, filters: dict[str, list[str]]) -> None:
        unknown = sorted(set(filters) - FILTER_KEYS)
        if unknown:
            raise BadRequest(
                f"invalid filter {unknown[0]!r} (events filter on: {', '.join(sorted(FILTER_KEYS))})"
            )
        self.filters = {k: list(v) for k, v in filters.items() if v}

    def __call__(self, event: Event) -> bool:
        f = self.filters
        if not f:
            return True
        if "type" in f and event.type not in f["type"]:
            return False
        if "scope" in f and event.scope not in f["scope"]:
            return False
        if "event" in f and not self._match_action(event.action, f["event"]):
            return False
        for kind in _NAMED_TYPES:
            if kind in f and not self._match_name(event, f[kind]):
                return False
        if "image" in f and not self._match_image(event, f["image"]):
            return False
        return "label" not in f or _match_labels(event.attributes, f["label"])

    @staticmethod
    def _match_action(action: str, wanted: list[str]) -> bool:
        if action in wanted:
            return True
        if _PREFIX_ACTIONS.intersection(wanted):
            return any(action.startswith(w) for w in wanted)
        return False

    @staticmethod
    def _match_name(event: Event, wanted: list[str]) -> bool:
        name = event.attributes.get("name", "")
        return any(event.actor_id.startswith(w) or name.startswith(w) for w in wanted)

    def _match_image(self, event: Event, wanted: list[str]) -> bool:
        name = event.attributes.get("name" if event.type == "image" else "image", "")
        candidates = {event.actor_id, name}
        candidates |= {_familiar_name(c) for c in list(candidates) if c}
        return bool(candidates & set(wanted))


def _match_labels(attributes: dict[str, str], wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in attributes or (eq and attributes[key] != value):
            return False
    return True


async def stream_events(
    bus: EventBus,
    accept: Callable[[Event], bool],
    since_nano: int | None,
    until_nano: int | None,
    *,
    now_nano: Callable[[], int] = time.time_ns,
) -> AsyncGenerator[Event, None]:
    """The events of one ``GET /events``: the past (per ``since``/``until``), then live ones.

    Ends after the past when ``until`` is already over, at ``until`` when it
    is ahead, never without one (the client hangs up).
    """
    now = now_nano()
    if until_nano is not None and until_nano <= now:
        start = since_nano or 0
        for event in _past(bus.history(), start, until_nano, accept):
            yield event
        return
    if until_nano is not None and since_nano is None:
        since_nano = 0
    stream = bus.subscribe(accept, since_nano=since_nano)
    try:
        if until_nano is None:
            async for event in stream:
                yield event
            return
        while True:
            remaining = (until_nano - now_nano()) / 1e9
            if remaining <= 0:
                return
            try:
                event = await asyncio.wait_for(anext(stream), remaining)
            except TimeoutError:
                return
            if event.time_nano > until_nano:
                return
            yield event
    finally:
        await stream.aclose()


def _past(
    events: Iterable[Event], since: int, until: int, accept: Callable[[Event], bool]
) -> Iterable[Event]:
    return (e for e in events if since <= e.time_nano <= until and accept(e))


def register(router: Router, services: Services) -> None:
    """Add ``GET /events`` for the engine's bus."""
    register_bus(router, services.engine.events)


def register_bus(router: Router, bus: EventBus) -> None:
    """Add ``GET /events`` for ``bus`` (tests use a bus without a daemon)."""

    @router.get("/events")
    async def events(req: Request) -> StreamResponse:
        since = parse_time(req.query_str("since"), "since")
        until = parse_time(req.query_str("until"), "until")
        if until is not None and since is not None and until < since:
            raise BadRequest(
                f"`since` time ({req.query_str('since')}) cannot be after "
                f"`until` time ({req.query_str('until')})"
            )
        accept = EventFilter(req.filters())
        version = parse_version(req.version)

        async def lines() -> AsyncIterator[bytes]:
            stream = stream_events(bus, accept, since, until)
            try:
                async for event in stream:
                    yield json.dumps(event.to_docker(version)).encode() + b"\n"
            finally:
                await stream.aclose()

        return StreamResponse(lines())


__all__ = ["FILTER_KEYS", "EventFilter", "parse_time", "register", "register_bus", "stream_events"]
