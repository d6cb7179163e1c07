"""Volume endpoints: ``/volumes`` (list), ``/volumes/create``, ``/volumes/{name}``, ``/volumes/prune``.

What ``docker volume create/ls/inspect/rm/prune`` and docker-py's
``client.volumes`` call. The work is :class:`~bulkhead.engine.volumes.VolumeStore`'s
(SQLite and a few filesystem calls, run in a worker thread); this module
only maps requests and answers in Docker's shapes:

- ``POST /volumes/create`` body ``{"Name", "Driver", "DriverOpts", "Labels"}``
  → 201 and the ``Volume`` (an existing name answers with the existing volume);
- ``GET /volumes?filters=`` → ``{"Volumes": [...], "Warnings": []}``;
- ``GET /volumes/{name}`` → the ``Volume`` (404 ``get x: no such volume``);
- ``DELETE /volumes/{name}?force=`` → 204 (409 while a container uses it);
- ``POST /volumes/prune?filters=`` → ``{"VolumesDeleted", "SpaceReclaimed"}``;
  anonymous volumes only unless ``all=true``, except for clients older than
  API 1.42, for which Docker pruned every unused volume;
- ``PUT /volumes/{name}`` (cluster volumes) → 503, as on a Docker node outside a swarm.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bulkhead.api.errors import APIError, BadRequest
from bulkhead.api.routes import Request, Response, Router, json_response, str_map

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.engine.events import EventBus
    from bulkhead.engine.volumes import VolumeStore


#: Docker's answer to a swarm-only request on a node that is not in a swarm
_NOT_SWARM = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)


def register(router: Router, services: Services) -> None:
    """Add the volume endpoints to ``router``, served by ``services.volumes``."""
    register_store(router, services.volumes, services.engine.events)


def register_store(router: Router, store: VolumeStore, events: EventBus | None = None) -> None:
    """Add the volume endpoints for ``store`` (tests use a store without a daemon).

    With ``events``, a prune is reported there (Docker's ``volume`` ``prune``
    event, attribute ``reclaimed``).
    """

    async def create(req: Request) -> Response:
        body = req.json()
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest("invalid volume create request: not a JSON object")
        name = body.get("Name") or ""
        driver = body.get("Driver") or "local"
        if not isinstance(name, str):
            raise BadRequest("invalid Name: must be a string")
        if not isinstance(driver, str):
            raise BadRequest("invalid Driver: must be a string")
        opts = str_map(body, "DriverOpts")
        labels = str_map(body, "Labels")
        vol = await asyncio.to_thread(
            store.create, name or None, driver=driver, driver_opts=opts, labels=labels
        )
        return json_response(vol.to_docker(), status=201)

    async def list_volumes(req: Request) -> Response:
        filters = req.filters()
        vols = await asyncio.to_thread(store.list, filters)
        return json_response({"Volumes": vols, "Warnings": []})

    async def inspect(req: Request) -> Response:
        return json_response(await asyncio.to_thread(store.inspect, req.params["name"]))

    async def remove(req: Request) -> Response:
        force = req.query_bool("force")
        await asyncio.to_thread(store.remove, req.params["name"], force)
        return Response(204, b"", None)

    async def prune(req: Request) -> Response:
        filters = req.filters()
        all_default = not req.version_at_least("1.42")
        report = await asyncio.to_thread(store.prune, filters, all_default=all_default)
        if events is not None:
            events.emit("volume", "prune", "", {"reclaimed": str(report["SpaceReclaimed"])})
        return json_response(report)

    async def update(req: Request) -> Response:
        await asyncio.to_thread(store.get, req.params["name"])  # 404 first, as Docker
        raise APIError(_NOT_SWARM, 503)

    router.add("POST", "/volumes/create", create)
    router.add("GET", "/volumes", list_volumes)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
    router.add("PUT", "/volumes/{name}", update)
