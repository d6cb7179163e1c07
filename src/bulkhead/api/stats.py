"""``GET /containers/{id}/stats`` and ``GET /containers/{id}/top`` of the Engine API.

*stats*
    ``stream`` (default true): one sample a second, each a JSON document on
    its own line, sent as it is taken; ``precpu_stats``/``preread`` are the
    previous sample's (the first has none). The stream goes on while the
    container exists: a container that is not running gives empty stats
    (name, id, zeroes), as moby's collector publishes them, and the stream
    ends when the container is removed or the client hangs up.
    ``stream=false``: one document, after two samples a second apart so that
    ``precpu_stats`` is set (the stock ``docker stats --no-stream`` computes
    its CPU % from the pair); with ``one-shot=true`` at once, from one
    sample. A container that is not running answers empty stats at once.
*top*
    ``ps_args`` (default ``-ef``): the container's rows of the host's ``ps``
    (:mod:`bulkhead.engine.top`); 409 when the container is not running.

The documents are built by :mod:`bulkhead.engine.stats`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from bulkhead.api.routes import Request, Response, Router, StreamResponse, json_response
from bulkhead.errors import NoSuchContainer

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.engine.engine import Engine

#: Seconds between two samples (moby's collector interval).
INTERVAL = 1.0


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


class StatsAPI:
    """The handlers, bound to the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _sample(self, ref: str) -> dict[str, Any]:
        """A sample of ``ref`` now, or its empty stats when it is not running."""
        from bulkhead.engine.stats import empty_stats

        c = self.engine.get(ref)
        sampler = self.engine.stats_sampler(c)
        doc = await asyncio.to_thread(sampler.sample) if sampler is not None else None
        return doc if doc is not None else empty_stats("/" + c.name, c.id)

    async def stats(self, req: Request) -> Response | StreamResponse:
        from bulkhead.engine.stats import chain, empty_stats

        c = self.engine.get(req.params["id"])
        cid = c.id
        if not req.query_bool("stream", True):
            if self.engine.stats_sampler(c) is None:
                return json_response(empty_stats("/" + c.name, cid))
            first = await self._sample(cid)
            if req.query_bool("one-shot"):
                return json_response(first)
            await asyncio.sleep(INTERVAL)
            return json_response(chain(await self._sample(cid), first))

        async def chunks() -> AsyncIterator[bytes]:
            previous: dict[str, Any] | None = None
            while True:
                try:
                    doc = await self._sample(cid)
                except NoSuchContainer:
                    return  # removed: the stream is over
                chain(doc, previous)
                previous = doc
                yield _line(doc)
                await asyncio.sleep(INTERVAL)

        return StreamResponse(chunks())

    async def top(self, req: Request) -> Response:
        result = await self.engine.top(req.params["id"], req.query_str("ps_args"))
        return json_response(result)


def register(router: Router, services: Services) -> None:
    """Add the stats and top endpoints to ``router``."""
    api = StatsAPI(services.engine)
    router.add("GET", "/containers/{id}/stats", api.stats)
    router.add("GET", "/containers/{id}/top", api.top)


__all__ = ["INTERVAL", "StatsAPI", "register"]
