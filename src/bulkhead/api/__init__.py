"""The Docker Engine API over a unix socket (see :mod:`bulkhead.api.server`).

:mod:`~bulkhead.api.routes` holds requests, responses, the routing table
and the hijack helper; :mod:`~bulkhead.api.errors` maps errors to Docker's
status codes; :mod:`~bulkhead.api.system` serves ``/_ping``, ``/version``
and ``/info``. :func:`build_router` is the daemon's table, which the engine
extends.
"""

from __future__ import annotations

from pathlib import Path

from bulkhead.api.routes import API_VERSION, MIN_API_VERSION, Router
from bulkhead.api.system import SystemInfo, register


def build_router(root: Path) -> Router:
    """A router with the system endpoints, reporting ``root`` as the state directory."""
    router = Router()
    register(router, SystemInfo(root=root))
    return router


__all__ = ["API_VERSION", "MIN_API_VERSION", "Router", "build_router"]
