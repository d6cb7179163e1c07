"""Disk usage and prune: the store's real reclaimed bytes, df's arithmetic, the prune endpoints."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_images_store import make_image

from bulkhead.api.disk import container_usage, image_usage, register, volume_usage
from bulkhead.api.routes import Request, Response, Router, parse_target
from bulkhead.cli.disk import df_rows, prune_warning
from bulkhead.engine.events import EventBus
from bulkhead.images.store import ImageStore
from bulkhead.snapshots import open_snapshotter


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with ImageStore(tmp_path / "images") as s:
        yield s


@pytest.fixture
def snapshotter(tmp_path: Path) -> Any:
    snap = open_snapshotter("vfs", str(tmp_path / "snapshots"))
    yield snap
    snap.close()


def _blob_bytes(store: ImageStore) -> int:
    return sum(info.size for info in store.content.walk())


def test_prune_reclaims_blobs_and_unpacked_layers(store: ImageStore, snapshotter: Any) -> None:
    big = store.add(make_image(store, {"big": b"x" * 200_000}, cmd=["big"]))
    store.unpack(big, snapshotter)
    blobs = _blob_bytes(store)
    unpacked = snapshotter.usage(big.chain_ids[0]).size
    assert unpacked >= 200_000
    report = store.prune()
    assert report["ImagesDeleted"] == [{"Deleted": big.id}]
    assert _blob_bytes(store) == 0  # not even without a snapshotter: blobs go anyway
    assert report["SpaceReclaimed"] == blobs
    # the unpacked layer was left without a snapshotter: the next collection takes it
    assert store.collect(snapshotter) == unpacked
    assert list(snapshotter.walk()) == []


def test_prune_with_a_snapshotter_counts_what_left_the_disk(
    store: ImageStore, snapshotter: Any
) -> None:
    a = store.add(make_image(store, {"same": b"1" * 50_000}, cmd=["a"]))
    b = store.add(make_image(store, {"same": b"1" * 50_000}, cmd=["b"]))
    store.tag(b, "keep")
    store.unpack(a, snapshotter)
    # a and b share their layer (blob and unpacked snapshot): pruning a frees its config
    # and manifest only
    own = sum(store.content.info(d).size for d in (a.id, a.manifest_digest))
    report = store.prune(snapshotter=snapshotter)
    assert report["ImagesDeleted"] == [{"Deleted": a.id}]
    assert report["SpaceReclaimed"] == own
    assert [i.name for i in snapshotter.walk()] == b.chain_ids
    unpacked = snapshotter.usage(b.chain_ids[0]).size
    blobs = _blob_bytes(store)
    report = store.prune(dangling_only=False, snapshotter=snapshotter)
    assert report["SpaceReclaimed"] == blobs + unpacked
    assert report["ImagesDeleted"] == [{"Untagged": "keep:latest"}, {"Deleted": b.id}]


def test_prune_keep_spares_what_the_filters_do_not_select(store: ImageStore) -> None:
    a = store.add(make_image(store, {"a": b"1"}, cmd=["a"]))
    b = store.add(make_image(store, {"b": b"2"}, cmd=["b"]))
    report = store.prune(keep=lambda image: image.id == a.id)
    assert report["ImagesDeleted"] == [{"Deleted": b.id}]
    assert [i.id for i in store.list()] == [a.id]


def test_disk_usage_sizes_and_shared_sizes(store: ImageStore, snapshotter: Any) -> None:
    a = store.add(make_image(store, {"same": b"1" * 30_000}, cmd=["a"]))
    b = store.add(make_image(store, {"same": b"1" * 30_000}, cmd=["b"]))
    store.register_use(a, "c1")
    store.unpack(a, snapshotter)
    doc = store.disk_usage(snapshotter)
    layer = a.layers[0]["digest"]
    shared = store.content.info(layer).size + snapshotter.usage(a.chain_ids[0]).size
    by_id = {i["Id"]: i for i in doc["Images"]}
    for image in (a, b):
        own = sum(store.content.info(d).size for d in (image.id, image.manifest_digest))
        assert by_id[image.id]["Size"] == own + shared
        assert by_id[image.id]["SharedSize"] == shared
    assert by_id[a.id]["Containers"] == 1 and by_id[b.id]["Containers"] == 0
    assert doc["LayersSize"] == _blob_bytes(store) + snapshotter.usage(a.chain_ids[0]).size


def test_usage_summaries_follow_dockers_arithmetic() -> None:
    images = [
        {"Size": 100, "SharedSize": 40, "Containers": 1},
        {"Size": 70, "SharedSize": 40, "Containers": 0},
    ]
    # reclaimable: all layers but what images in use hold alone (100 - 40)
    assert image_usage(130, images) == {
        "ActiveCount": 1,
        "TotalCount": 2,
        "Reclaimable": 70,
        "TotalSize": 130,
    }
    containers = [{"State": "running", "SizeRw": 5}, {"State": "exited", "SizeRw": 7}]
    assert container_usage(containers) == {
        "ActiveCount": 1,
        "TotalCount": 2,
        "Reclaimable": 7,
        "TotalSize": 12,
    }
    volumes = [
        {"UsageData": {"Size": 10, "RefCount": 1}},
        {"UsageData": {"Size": 3, "RefCount": 0}},
        {"UsageData": {"Size": -1, "RefCount": -1}},
    ]
    assert volume_usage(volumes) == {
        "ActiveCount": 1,
        "TotalCount": 3,
        "Reclaimable": 3,
        "TotalSize": 13,
    }


def test_cli_df_rows_match_the_docker_cli() -> None:
    doc = {
        "LayersSize": 6_259_000,
        "Images": [
            {"Size": 6_260_000, "SharedSize": 3_109_000, "Containers": 0},
            {"Size": 3_110_000, "SharedSize": 3_109_000, "Containers": 2},
        ],
        "Containers": [
            {"State": "running", "SizeRw": 8192},
            {"State": "exited", "SizeRw": 3_150_000},
        ],
        "Volumes": [{"UsageData": {"Size": 0, "RefCount": 1}}],
        "BuildCache": [],
    }
    rows = df_rows(doc)
    assert [
        (r["Type"], r["TotalCount"], r["Active"], r["Size"], r["Reclaimable"]) for r in rows
    ] == [
        ("Images", "2", "1", "6.259MB", "6.258MB (99%)"),
        ("Containers", "2", "1", "3.158MB", "3.15MB (99%)"),
        ("Local Volumes", "1", "1", "0B", "0B"),
        ("Build Cache", "0", "0", "0B", "0B"),
    ]
    assert "  - all anonymous volumes not used by at least one container\n" in prune_warning(
        False, True
    )
    assert "  - all dangling images\n" in prune_warning(False, False)
    assert "  - all build cache\n" in prune_warning(True, False)


# --- the endpoints, without a server -----------------------------------------------------


def _call(router: Router, method: str, target: str) -> tuple[int, Any]:
    from bulkhead.api.errors import status_for

    version, path, query = parse_target(target)
    handler, params = router.match(method, path)
    req = Request(method, path, version, query, {}, b"", params)

    async def call() -> Any:
        return await handler(req)

    try:
        reply = asyncio.run(call())
    except Exception as exc:
        return status_for(exc), {"message": str(exc)}
    assert isinstance(reply, Response)
    return reply.status, json.loads(reply.body)


@pytest.fixture
def api(store: ImageStore, snapshotter: Any) -> tuple[Router, EventBus]:
    events = EventBus()
    volumes = SimpleNamespace(
        list=lambda filters=None: [{"Name": "v1"}, {"Name": "gone"}],
        usage=lambda name: {"Size": 5, "RefCount": 0} if name == "v1" else 1 / 0,
    )
    engine = SimpleNamespace(
        events=events,
        list=lambda all, size: [{"Id": "c1", "State": "exited", "SizeRw": 9, "SizeRootFs": 19}],
    )
    services = SimpleNamespace(
        images=store, snapshotter=snapshotter, volumes=volumes, engine=engine
    )
    router = Router()
    register(router, services)  # type: ignore[arg-type]
    return router, events


def test_system_df_legacy_and_usage_shapes(api: tuple[Router, EventBus], store: ImageStore) -> None:
    router, _ = api
    image = store.add(make_image(store, {"a": b"1"}))
    status, doc = _call(router, "GET", "/v1.50/system/df")
    assert status == 200
    assert doc["LayersSize"] == _blob_bytes(store)
    assert [i["Id"] for i in doc["Images"]] == [image.id]
    assert doc["Containers"][0]["SizeRw"] == 9
    assert doc["Volumes"] == [
        {"Name": "v1", "UsageData": {"Size": 5, "RefCount": 0}},
        {"Name": "gone", "UsageData": {"Size": -1, "RefCount": -1}},
    ]
    assert doc["BuildCache"] == []
    status, doc = _call(router, "GET", "/v1.52/system/df?type=volume&type=container")
    assert status == 200 and set(doc) == {"VolumeUsage", "ContainerUsage"}
    assert doc["VolumeUsage"] == {
        "ActiveCount": 0,
        "TotalCount": 2,
        "Reclaimable": 5,
        "TotalSize": 5,
    }
    status, doc = _call(router, "GET", "/v1.56/system/df?verbose=1&type=image")
    assert [i["Id"] for i in doc["ImageUsage"]["Items"]] == [image.id]
    assert _call(router, "GET", "/system/df?type=network") == (
        400,
        {"message": "unknown object type: network"},
    )


def test_network_and_build_prune_answer_empty_and_report_events(
    api: tuple[Router, EventBus],
) -> None:
    router, events = api
    assert _call(router, "POST", "/networks/prune") == (200, {"NetworksDeleted": []})
    assert _call(router, "POST", "/build/prune?all=1") == (
        200,
        {"CachesDeleted": [], "SpaceReclaimed": 0},
    )
    assert _call(router, "POST", '/networks/prune?filters={"driver":["x"]}')[0] == 400
    got = [(e.type, e.action, e.actor_id, e.attributes) for e in events.history()]
    assert got == [
        ("network", "prune", "", {"reclaimed": "0"}),
        ("builder", "prune", "", {"reclaimed": "0"}),
    ]


def test_volume_prune_reports_an_event(tmp_path: Path) -> None:
    from bulkhead.api.volumes import register_store
    from bulkhead.engine.volumes import VolumeStore

    store = VolumeStore(tmp_path / "volumes")
    vol = store.create(anonymous=True)
    Path(vol.mountpoint, "f").write_bytes(b"z" * 1234)
    events = EventBus()
    router = Router()
    register_store(router, store, events)
    status, doc = _call(router, "POST", "/volumes/prune")
    assert status == 200 and doc == {"VolumesDeleted": [vol.name], "SpaceReclaimed": 1234}
    [event] = events.history()
    assert (event.type, event.action, event.attributes) == (
        "volume",
        "prune",
        {"reclaimed": "1234"},
    )
    store.close()


def test_container_prune_until_takes_dockers_time_forms() -> None:
    import datetime

    from bulkhead.engine.engine import _parse_until
    from bulkhead.errors import SpecError

    local = datetime.datetime(2000, 1, 2).timestamp()  # no zone: the daemon's local time
    assert _parse_until("2000-01-02") == local
    assert _parse_until("2000-01-02T00:00:00") == local
    assert _parse_until("2000-01-02T00:00:00Z") == 946771200
    assert _parse_until("946771200") == 946771200
    with pytest.raises(SpecError, match="invalid filter 'until=soon'"):
        _parse_until("soon")
