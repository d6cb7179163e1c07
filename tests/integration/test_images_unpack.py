"""Images unpacked into real snapshotters (overlay mounts and vfs copies), as root."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import needs_root

from bulkhead.devtools.busybox import BUSYBOX
from bulkhead.errors import DigestMismatch, ImageInUse
from bulkhead.images import busybox
from bulkhead.images.store import ImageStore
from bulkhead.oci.image_spec import chain_ids
from bulkhead.snapshots import Kind
from bulkhead.snapshots.mount import mount_all, unmount_all
from bulkhead.snapshots.overlay import OverlaySnapshotter
from bulkhead.snapshots.vfs import VfsSnapshotter

pytestmark = [
    needs_root,
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static"),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_path / "images") as s:
        yield s


@pytest.fixture(params=["overlay", "vfs"])
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    cls = OverlaySnapshotter if request.param == "overlay" else VfsSnapshotter
    snap = cls(tmp_path / f"snap-{request.param}")
    yield snap
    snap.close()


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mnt"
    target.mkdir()
    yield target
    if os.path.ismount(target):
        unmount_all(str(target))


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A layer tar: (name, data) files; data None makes a directory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _add_layered_image(store: ImageStore, layers: list[bytes], *, lie: bool = False) -> str:
    blobs = [busybox.gzip_reproducible(t) for t in layers]
    diff_ids = [busybox.sha256_digest(t) for t in layers]
    if lie:
        diff_ids[-1] = busybox.sha256_digest(b"something else")
    config = busybox.canonical_json(
        {
            "architecture": busybox.host_platform()["architecture"],
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    manifest = busybox.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": busybox.MEDIA_TYPE_OCI_CONFIG,
                "digest": busybox.sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_LAYER_GZIP,
                    "digest": busybox.sha256_digest(b),
                    "size": len(b),
                }
                for b in blobs
            ],
        }
    )
    for data in [*blobs, config, manifest]:
        busybox.put_blob(store.content, data)
    return busybox.sha256_digest(manifest)


def test_busybox_unpacks_and_runs(store: ImageStore, snapshotter: Any, mountpoint: Path) -> None:
    manifest_digest, config_digest = busybox.build_busybox_image(store.content)
    image = store.add(manifest_digest)
    store.tag(image, "busybox")
    assert image.id == config_digest
    top = store.unpack("busybox", snapshotter)
    assert top == chain_ids(image.diff_ids)[-1]
    assert snapshotter.stat(top).kind == Kind.COMMITTED
    # A second unpack reuses the committed snapshot.
    before = sorted(i.name for i in snapshotter.walk())
    assert store.unpack(image, snapshotter) == top
    assert sorted(i.name for i in snapshotter.walk()) == before
    # A container's root: an active snapshot on the image's top chain id.
    mounts = snapshotter.prepare("container-1", parent=top)
    mount_all(mounts, str(mountpoint))
    try:
        assert (mountpoint / "bin" / "busybox").stat().st_mode & 0o111
        assert os.readlink(mountpoint / "bin" / "sh") == "busybox"
        assert (mountpoint / "tmp").stat().st_mode & 0o7777 == 0o1777
        assert "root:x:0:0" in (mountpoint / "etc" / "passwd").read_text()
        out = subprocess.run(
            [str(mountpoint / "bin" / "busybox"), "echo", "hello from the image"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout == "hello from the image\n"
        (mountpoint / "tmp" / "written").write_text("container data")
    finally:
        unmount_all(str(mountpoint))
    # The image's snapshot is untouched by the container's writes.
    view = snapshotter.view("look", parent=top)
    mount_all(view, str(mountpoint))
    try:
        assert not (mountpoint / "tmp" / "written").exists()
    finally:
        unmount_all(str(mountpoint))
    # In use by the container: removal refused unless forced.
    store.register_use(image, "container-1")
    with pytest.raises(ImageInUse):
        store.remove("busybox")


def test_layers_with_whiteouts(store: ImageStore, snapshotter: Any, mountpoint: Path) -> None:
    base = _tar(
        [("etc", None), ("etc/keep", b"keep"), ("etc/gone", b"gone"), ("d", None), ("d/old", b"1")]
    )
    upper = _tar(
        [("etc/.wh.gone", b""), ("d/.wh..wh..opq", b""), ("d/new", b"2"), ("etc/added", b"+")]
    )
    image = store.add(_add_layered_image(store, [base, upper]))
    top = store.unpack(image, snapshotter)
    assert [snapshotter.stat(c).kind for c in image.chain_ids] == [Kind.COMMITTED] * 2
    mount_all(snapshotter.prepare("c", parent=top), str(mountpoint))
    try:
        assert sorted(os.listdir(mountpoint / "etc")) == ["added", "keep"]
        assert os.listdir(mountpoint / "d") == ["new"]
    finally:
        unmount_all(str(mountpoint))


def test_shared_base_layers_are_shared(store: ImageStore, snapshotter: Any) -> None:
    base = _tar([("base", b"b")])
    a = store.add(_add_layered_image(store, [base, _tar([("a", b"a")])]))
    b = store.add(_add_layered_image(store, [base, _tar([("b", b"b")])]))
    store.unpack(a, snapshotter)
    store.unpack(b, snapshotter)
    committed = [i.name for i in snapshotter.walk() if i.kind == Kind.COMMITTED]
    assert sorted(committed) == sorted({*a.chain_ids, *b.chain_ids})
    assert len(committed) == 3


def test_diff_id_mismatch_refused_and_cleaned(store: ImageStore, snapshotter: Any) -> None:
    image = store.add(
        _add_layered_image(store, [_tar([("a", b"1")]), _tar([("b", b"2")])], lie=True)
    )
    with pytest.raises(DigestMismatch, match="the image config says"):
        store.unpack(image, snapshotter)
    names = [(i.name, i.kind) for i in snapshotter.walk()]
    # The first (good) layer stays committed; nothing of the bad one is left.
    assert names == [(image.chain_ids[0], Kind.COMMITTED)]


def test_remove_collects_unpacked_layers(store: ImageStore, snapshotter: Any) -> None:
    base = _tar([("base", b"b")])
    a = store.add(_add_layered_image(store, [base, _tar([("a", b"a")])]))
    b = store.add(_add_layered_image(store, [base, _tar([("b", b"b")])]))
    store.tag(a, "a")
    store.tag(b, "b")
    store.unpack(a, snapshotter)
    top_b = store.unpack(b, snapshotter)
    snapshotter.prepare("container-of-b", parent=top_b)
    store.remove("a", snapshotter=snapshotter)
    names = {i.name for i in snapshotter.walk()}
    # a's top layer went; the shared base and b's layers stay.
    assert a.chain_ids[1] not in names
    assert {*b.chain_ids, "container-of-b"} <= names
    # b removed while a container is built on its top layer: the layer stays until it goes.
    store.remove("b", snapshotter=snapshotter)
    assert {*b.chain_ids} <= {i.name for i in snapshotter.walk()}
    snapshotter.remove("container-of-b")
    assert store.gc_snapshots(snapshotter) == [b.chain_ids[1], b.chain_ids[0]]
    assert list(snapshotter.walk()) == []


def test_export_filesystem_from_mounts(store: ImageStore, snapshotter: Any, tmp_path: Path) -> None:
    from bulkhead.images import archive

    manifest_digest, _ = busybox.build_busybox_image(store.content)
    top = store.unpack(store.add(manifest_digest), snapshotter)
    mounts = snapshotter.prepare("c", parent=top)
    n = archive.export_filesystem(mounts, tmp_path / "export.tar")
    with tarfile.open(tmp_path / "export.tar") as tar:
        names = set(tar.getnames())
    assert n == len(names)
    assert {"bin/busybox", "bin/sh", "etc/passwd", "tmp"} <= names
    assert not any(os.path.ismount(p) for p in tmp_path.iterdir())


def test_concurrent_unpacks_share_one_chain(tmp_path: Path, snapshotter: Any) -> None:
    """Two stores (as two engines' threads would) unpacking the same image at once."""
    import threading

    with ImageStore(tmp_path / "images") as s:
        manifest_digest, _ = busybox.build_busybox_image(s.content)
        image = s.add(manifest_digest)
    errors: list[BaseException] = []
    tops: list[str] = []

    def run() -> None:
        try:
            with ImageStore(tmp_path / "images") as s:
                tops.append(s.unpack(image.id, snapshotter))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(tops)) == 1
    assert [(i.name, i.kind) for i in snapshotter.walk()] == [(tops[0], Kind.COMMITTED)]


def test_push_pull_unpack_end_to_end(
    store: ImageStore, snapshotter: Any, mountpoint: Path, tmp_path: Path, registry: Any
) -> None:
    """busybox built offline, pushed to a real registry, pulled into a fresh store, run."""
    from bulkhead.images.registry import RegistryClient

    manifest_digest, config_digest = busybox.build_busybox_image(store.content)
    image = store.add(manifest_digest)
    ref = registry.ref("library/busybox:e2e")
    with RegistryClient() as client:
        client.push(ref, store.content, image.manifest_digest)
        with ImageStore(tmp_path / "pulled") as fresh:
            pulled = fresh.pull(client, ref)
            assert pulled.id == config_digest
            assert pulled.tags == [ref]
            assert pulled.repo_digests == [f"{registry.host}/library/busybox@{manifest_digest}"]
            top = fresh.unpack(ref, snapshotter)
    mount_all(snapshotter.prepare("c", parent=top), str(mountpoint))
    try:
        out = subprocess.run(
            [str(mountpoint / "bin" / "sh"), "-c", "echo pulled and running"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout == "pulled and running\n"
    finally:
        unmount_all(str(mountpoint))


def test_pull_of_an_index_keeps_it(store: ImageStore, tmp_path: Path, registry: Any) -> None:
    """A multi-platform push (the busybox index): the repo digest is the index's, gc keeps it."""
    from bulkhead.images.registry import RegistryClient

    busybox.build_busybox_image(store.content)
    built = busybox.make_busybox_image()
    ref = registry.ref("library/busybox:multi")
    with RegistryClient() as client, ImageStore(tmp_path / "pulled") as fresh:
        client.push(ref, store.content, built.index_digest)
        image = fresh.pull(client, ref)
        assert image.manifest_digest == built.manifest_digest
        assert image.repo_digests == [f"{registry.host}/library/busybox@{built.index_digest}"]
        assert fresh.get(f"{registry.host}/library/busybox@{built.index_digest}").id == image.id
        fresh.gc()
        assert fresh.content.exists(built.index_digest)
        assert fresh.remove(ref)[-1] == {"Deleted": image.id}
        assert list(fresh.content.walk()) == []
