"""Disk usage and the prunes of what bulkhead does not keep: ``/system/df``, ``/networks/prune``, ``/build/prune``.

``GET /system/df`` is what ``docker system df [-v]`` calls. Clients older
than API 1.52 get Docker's legacy shape, lists the CLI adds up itself:

- ``LayersSize``: bytes of every blob and every unpacked layer, each once;
- ``Images``: ImageSummary entries whose ``Size`` (blobs and unpacked layers
  on disk), ``SharedSize`` (the part other images share) and ``Containers``
  (how many use it) are computed, not ``-1``;
- ``Containers``: ContainerSummary entries with ``SizeRw`` (the container's
  writable layer) and ``SizeRootFs`` (that plus its image);
- ``Volumes``: Volume entries with ``UsageData`` ``{"Size", "RefCount"}``;
- ``BuildCache``: ``[]`` (bulkhead does not build images).

From API 1.52 the daemon adds them up: ``ImageUsage``, ``ContainerUsage``,
``VolumeUsage``, ``BuildCacheUsage``, each ``{"ActiveCount", "TotalCount",
"Reclaimable", "TotalSize"}`` plus ``Items`` (the lists above) with
``verbose=true``. ``type=`` (repeatable: ``container``, ``image``, ``volume``,
``build-cache``) limits the work and the answer to those kinds.

*Reclaimable* is Docker's: for images, everything but what images in use
hold alone (``Size - SharedSize``); for containers, the writable layers of
containers not running; for volumes, the volumes no container references.

``docker system prune`` calls each kind's prune endpoint:
``POST /networks/prune`` removes the unused user-defined networks
(:meth:`bulkhead.network.manager.NetworkManager.prune`); the build cache does
not exist here, so ``POST /build/prune`` answers
``{"CachesDeleted": [], "SpaceReclaimed": 0}``.
Each prune reports one ``prune`` event of its object type with the
``reclaimed`` attribute, as Docker does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bulkhead.api.errors import BadRequest
from bulkhead.api.routes import Request, Response, Router, json_response

if TYPE_CHECKING:
    from bulkhead.engine.context import Services

#: the object kinds of ``GET /system/df?type=``
DF_TYPES = ("container", "image", "volume", "build-cache")
#: the API version from which ``/system/df`` answers with the ``*Usage`` summaries
USAGE_API = "1.52"
_NETWORK_PRUNE_FILTERS = {"until", "label", "label!"}
_BUILD_PRUNE_FILTERS = {
    "until",
    "id",
    "parent",
    "type",
    "description",
    "inuse",
    "shared",
    "private",
    "label",
    "label!",
}


def _usage(
    items: list[dict[str, Any]], active: int, total: int, reclaimable: int
) -> dict[str, Any]:
    return {
        "ActiveCount": active,
        "TotalCount": len(items),
        "Reclaimable": max(reclaimable, 0),
        "TotalSize": total,
    }


def image_usage(layers_size: int, images: list[dict[str, Any]]) -> dict[str, Any]:
    """``ImageUsage``: Docker's counting (the CLI's, before 1.52) over the df image list."""
    used = [i for i in images if i.get("Containers", 0) > 0]
    held = sum(i["Size"] - i["SharedSize"] for i in used if i["Size"] >= 0 and i["SharedSize"] >= 0)
    return _usage(images, len(used), layers_size, layers_size - held)


def container_usage(containers: list[dict[str, Any]]) -> dict[str, Any]:
    """``ContainerUsage``: writable layers; those of containers not running are reclaimable."""
    total = sum(int(c.get("SizeRw") or 0) for c in containers)
    idle = sum(
        int(c.get("SizeRw") or 0) for c in containers if c.get("State") not in ("running", "paused")
    )
    active = sum(1 for c in containers if c.get("State") in ("running", "paused"))
    return _usage(containers, active, total, idle)


def volume_usage(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """``VolumeUsage``: volumes' sizes; those no container references are reclaimable."""
    sizes = [(v["UsageData"]["Size"], v["UsageData"]["RefCount"]) for v in volumes]
    total = sum(size for size, _ in sizes if size > 0)
    idle = sum(size for size, refs in sizes if size > 0 and refs == 0)
    active = sum(1 for _, refs in sizes if refs > 0)
    return _usage(volumes, active, total, idle)


class DiskUsage:
    """The data of ``GET /system/df`` from the daemon's stores (run in a worker thread)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def images(self) -> tuple[int, list[dict[str, Any]]]:
        doc = self.services.images.disk_usage(self.services.snapshotter)
        return int(doc["LayersSize"]), list(doc["Images"])

    def containers(self) -> list[dict[str, Any]]:
        return self.services.engine.list(all=True, size=True)

    def volumes(self) -> list[dict[str, Any]]:
        store = self.services.volumes
        out = []
        for vol in store.list():
            doc = dict(vol)
            try:
                doc["UsageData"] = store.usage(vol["Name"])
            except Exception:  # removed meanwhile, or unreadable: Docker's "not available"
                doc["UsageData"] = {"Size": -1, "RefCount": -1}
            out.append(doc)
        return out

    def document(self, types: set[str], legacy: bool, verbose: bool) -> dict[str, Any]:
        """The answer: Docker's legacy lists, or (1.52+) the ``*Usage`` summaries."""
        out: dict[str, Any] = {}
        if "image" in types:
            layers_size, images = self.images()
            if legacy:
                out["LayersSize"] = layers_size
                out["Images"] = images
            else:
                out["ImageUsage"] = image_usage(layers_size, images)
                if verbose:
                    out["ImageUsage"]["Items"] = images
        if "container" in types:
            containers = self.containers()
            if legacy:
                out["Containers"] = containers
            else:
                out["ContainerUsage"] = container_usage(containers)
                if verbose:
                    out["ContainerUsage"]["Items"] = containers
        if "volume" in types:
            volumes = self.volumes()
            if legacy:
                out["Volumes"] = volumes
            else:
                out["VolumeUsage"] = volume_usage(volumes)
                if verbose:
                    out["VolumeUsage"]["Items"] = volumes
        if "build-cache" in types:
            if legacy:
                out["BuildCache"] = []
                out["BuilderSize"] = 0
            else:
                out["BuildCacheUsage"] = _usage([], 0, 0, 0)
                if verbose:
                    out["BuildCacheUsage"]["Items"] = []
        return out


def _check_filters(filters: dict[str, list[str]], allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise BadRequest(f"invalid filter '{key}'")


def register(router: Router, services: Services) -> None:
    """Add ``/system/df``, ``/networks/prune`` and ``/build/prune`` to ``router``."""
    usage = DiskUsage(services)

    async def system_df(req: Request) -> Response:
        wanted = req.query.get("type") or []
        for kind in wanted:
            if kind not in DF_TYPES:
                raise BadRequest(f"unknown object type: {kind}")
        types = set(wanted) or set(DF_TYPES)
        legacy = not req.version_at_least(USAGE_API)
        verbose = req.query_bool("verbose")
        doc = await asyncio.to_thread(usage.document, types, legacy, verbose)
        return json_response(doc)

    async def networks_prune(req: Request) -> Response:
        filters = req.filters()
        _check_filters(filters, _NETWORK_PRUNE_FILTERS)
        # the user-defined networks without containers (each one a destroy event)
        manager = getattr(services.engine, "network", None)
        deleted = await asyncio.to_thread(manager.prune, filters) if manager is not None else []
        services.engine.events.emit("network", "prune", "", {"reclaimed": "0"})
        return json_response({"NetworksDeleted": deleted})

    async def build_prune(req: Request) -> Response:
        _check_filters(req.filters(), _BUILD_PRUNE_FILTERS)
        req.query_bool("all")
        req.query_int("keep-storage")
        req.query_int("reserved-space")
        req.query_int("max-used-space")
        req.query_int("min-free-space")
        services.engine.events.emit("builder", "prune", "", {"reclaimed": "0"})
        return json_response({"CachesDeleted": [], "SpaceReclaimed": 0})

    router.add("GET", "/system/df", system_df)
    router.add("POST", "/networks/prune", networks_prune)
    router.add("POST", "/build/prune", build_prune)
