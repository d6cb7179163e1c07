"""The daemon's event stream: what happened to containers, images, volumes and networks.

Vocabulary (Docker's ``/events``):

*event*
    one thing that happened: its *type* (``container``, ``image``,
    ``volume``, ``network``, ``daemon``), its *action* (``create``,
    ``start``, ``die``, ``oom``, ``health_status: healthy``, ``pull``...),
    its *actor* (the object's id plus string *attributes*: a container's
    ``name`` and ``image`` and its labels, ``exitCode`` on ``die``...), a
    *scope* (``local``) and the time in nanoseconds.
*bus*
    :class:`EventBus`: every part of the daemon *emits* into it; ``GET
    /events`` *subscribes*. It keeps the last :data:`HISTORY` events in
    memory, so a subscriber asking with ``since`` gets the recent past
    before the live stream (Docker keeps 256 and, like bulkhead, none across
    a daemon restart).

Emitting never blocks and never fails: a subscriber that does not keep up
loses its oldest undelivered events (its queue is bounded), not the daemon's
time. :meth:`EventBus.emit` may be called from the event loop's thread or
from a worker thread (the engine does file work in threads).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncGenerator, Callable

import msgspec

#: How many past events the bus keeps for ``since`` (moby's ``eventsLimit``).
HISTORY = 256

#: How many undelivered events one subscriber may have before it loses the oldest.
QUEUE_LIMIT = 1024


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """One event; :meth:`to_docker` renders Docker's JSON message."""

    type: str
    action: str
    actor_id: str
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    scope: str = "local"
    time_nano: int = 0

    def to_docker(self, api_version: tuple[int, int] | None = None) -> dict[str, object]:
        """Docker's ``EventMessage``; API versions before 1.52 also get ``status``/``id``/``from``."""
        msg: dict[str, object] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": self.scope,
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }
        legacy = api_version is None or api_version < (1, 52)
        if legacy and self.type in ("container", "image"):
            msg["status"] = self.action
            msg["id"] = self.actor_id
            if self.type == "container" and "image" in self.attributes:
                msg["from"] = self.attributes["image"]
        return msg


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Event], bool]) -> None:
        self.loop = loop
        self.accept = accept
        self.queue: collections.deque[Event] = collections.deque(maxlen=QUEUE_LIMIT)
        self.ready = asyncio.Event()

    def offer(self, event: Event) -> None:  # on the subscriber's loop
        if self.accept(event):
            self.queue.append(event)
            self.ready.set()


class EventBus:
    """See the module docstring. ``clock`` gives nanoseconds (tests may pass their own)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._history: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        self._subscribers: list[_Subscriber] = []
        self._guard = threading.Lock()

    def emit(
        self,
        type: str,
        action: str,
        actor_id: str,
        attributes: dict[str, str] | None = None,
    ) -> Event:
        """Record an event and hand it to every subscriber; returns it."""
        with self._guard:
            event = Event(
                type=type,
                action=action,
                actor_id=actor_id,
                attributes=dict(attributes or {}),
                time_nano=self._clock(),
            )
            self._history.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if _on_loop(sub.loop):
                sub.offer(event)
            else:
                try:
                    sub.loop.call_soon_threadsafe(sub.offer, event)
                except RuntimeError:  # that loop is closed: its subscriber is gone
                    pass
        return event

    def history(self) -> list[Event]:
        """The kept past events, oldest first."""
        with self._guard:
            return list(self._history)

    async def subscribe(
        self,
        accept: Callable[[Event], bool] = lambda _e: True,
        *,
        since_nano: int | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Past events from ``since_nano`` (when given), then live ones, all passing ``accept``.

        The subscription is registered under the same lock the past is read
        with, so an event is either in that past or in the live queue: never
        both, never neither. Ends only when the consumer stops iterating.
        """
        sub = _Subscriber(asyncio.get_running_loop(), accept)
        with self._guard:
            self._subscribers.append(sub)
            past = list(self._history)
        try:
            if since_nano is not None:
                for event in past:
                    if event.time_nano >= since_nano and accept(event):
                        yield event
            while True:
                await sub.ready.wait()
                sub.ready.clear()
                while sub.queue:
                    yield sub.queue.popleft()
        finally:
            with self._guard:
                self._subscribers.remove(sub)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


__all__ = ["HISTORY", "QUEUE_LIMIT", "Event", "EventBus"]
