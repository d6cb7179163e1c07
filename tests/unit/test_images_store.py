"""ImageStore: add, tag, get, list, inspect, history, remove (in use, force), prune, gc."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bulkhead.devtools.busybox import BUSYBOX
from bulkhead.errors import (
    BlobNotFound,
    DigestMismatch,
    ImageInUse,
    ImageNotFound,
    PlatformNotFound,
    UnsupportedMediaType,
)
from bulkhead.images import busybox
from bulkhead.images.store import ImageStore, blob_children, normalize_reference
from bulkhead.oci.image_spec import chain_ids


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return busybox.gzip_reproducible(tar_bytes), busybox.sha256_digest(tar_bytes)


def make_image(
    store: ImageStore,
    files: dict[str, bytes],
    *,
    cmd: list[str] | None = None,
    created: str = "2024-01-02T03:04:05Z",
    layer_media_type: str = busybox.MEDIA_TYPE_OCI_LAYER_GZIP,
) -> str:
    """Put a one-layer image's blobs in the store; return the manifest digest."""
    layer, diff_id = _layer(files)
    config = busybox.canonical_json(
        {
            "created": created,
            "architecture": busybox.host_platform()["architecture"],
            "os": "linux",
            "config": {"Cmd": cmd or ["sh"], "Env": [busybox.PATH_ENV]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "test layer"}],
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
                    "mediaType": layer_media_type,
                    "digest": busybox.sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    for data in (layer, config, manifest):
        busybox.put_blob(store.content, data)
    return busybox.sha256_digest(manifest)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with ImageStore(tmp_path / "images") as s:
        yield s


def test_normalize_reference() -> None:
    assert normalize_reference("busybox") == "docker.io/library/busybox:latest"
    assert normalize_reference("me/app:1") == "docker.io/me/app:1"
    assert normalize_reference("localhost:5000/app") == "localhost:5000/app:latest"


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chains = chain_ids([a, b])
    assert chains[0] == a
    assert chains[1] == busybox.sha256_digest(f"{a} {b}".encode())


def test_add_tag_get_list(store: ImageStore) -> None:
    digest = make_image(store, {"hello": b"hi"})
    image = store.add(digest)
    assert image.manifest_digest == digest
    assert store.add(digest).id == image.id  # twice is harmless
    store.tag(image, "hello:1")
    assert store.get("hello:1").id == image.id
    assert store.get("docker.io/library/hello:1").id == image.id
    assert store.get(image.id).id == image.id
    assert store.get(image.id.split(":")[1]).id == image.id
    assert store.get(image.short_id[:5]).id == image.id
    with pytest.raises(ImageNotFound):
        store.get("nothere")
    images = store.list()
    assert [i.id for i in images] == [image.id]
    assert images[0].tags == ["docker.io/library/hello:1"]


def test_add_missing_layer_refused(store: ImageStore) -> None:
    digest = make_image(store, {"x": b"1"})
    manifest = json.loads(store.content.read(digest))
    store.content.delete(manifest["layers"][0]["digest"])
    with pytest.raises(BlobNotFound):
        store.add(digest)
    assert store.list() == []


def test_add_unknown_layer_media_type_refused(store: ImageStore) -> None:
    digest = make_image(store, {"x": b"1"}, layer_media_type="application/x-foo")
    with pytest.raises(UnsupportedMediaType):
        store.add(digest)


def test_add_corrupt_config_refused(store: ImageStore) -> None:
    digest = make_image(store, {"x": b"1"})
    manifest = json.loads(store.content.read(digest))
    path = Path(store.content.path(manifest["config"]["digest"]))
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b"test layer", b"evil layer"))
    with pytest.raises(DigestMismatch):
        store.add(digest)
    assert store.list() == []


def test_schema1_refused(store: ImageStore) -> None:
    doc = busybox.canonical_json({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []})
    digest = busybox.put_blob(store.content, doc)
    with pytest.raises(UnsupportedMediaType, match="schema1"):
        store.add(digest)


def test_add_by_index_selects_platform(store: ImageStore) -> None:
    digest = make_image(store, {"x": b"1"})
    index = busybox.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": busybox.MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": "sha256:" + "0" * 64,
                    "size": 1,
                    "platform": {"architecture": "mips64", "os": "linux"},
                },
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": digest,
                    "size": len(store.content.read(digest)),
                    "platform": busybox.host_platform(),
                },
            ],
        }
    )
    index_digest = busybox.put_blob(store.content, index)
    image = store.add(index_digest, repo_digest=f"docker.io/library/x@{index_digest}")
    assert image.manifest_digest == digest
    assert store.get(f"x@{index_digest}").id == image.id
    with pytest.raises(PlatformNotFound, match="mips64"):
        store.add(index_digest, platform={"architecture": "s390x", "os": "linux"})


def test_inspect_and_history(store: ImageStore) -> None:
    image = store.add(make_image(store, {"a": b"1"}, cmd=["echo", "hi"]))
    store.tag(image, "busybox")
    doc = store.inspect("busybox")
    assert doc["Id"] == image.id
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["Config"]["Cmd"] == ["echo", "hi"]
    assert doc["Os"] == "linux"
    assert doc["Architecture"] == busybox.host_platform()["architecture"]
    assert doc["RootFS"] == {"Type": "layers", "Layers": image.diff_ids}
    assert doc["Created"] == "2024-01-02T03:04:05Z"
    assert doc["Size"] == image.size > 0
    assert doc["Descriptor"]["digest"] == image.manifest_digest
    summary = store.summaries()
    assert summary[0]["Id"] == image.id
    assert summary[0]["RepoTags"] == ["busybox:latest"]
    assert summary[0]["Created"] == 1704164645
    assert summary[0]["Containers"] == 0
    store.register_use(image, "c1")
    assert store.summaries()[0]["Containers"] == 1
    hist = store.history("busybox")
    assert hist[0]["Id"] == image.id
    assert hist[0]["CreatedBy"] == "test layer"
    assert hist[0]["Created"] == 1704164645
    assert hist[0]["Tags"] == ["busybox:latest"]


def test_remove_untags_then_deletes_and_collects(store: ImageStore) -> None:
    image = store.add(make_image(store, {"a": b"1"}))
    store.tag(image, "one")
    store.tag(image, "two")
    assert store.remove("one") == [{"Untagged": "one:latest"}]
    assert store.get("two").id == image.id
    blobs = [image.manifest_digest, image.id, image.layers[0]["digest"]]
    assert all(store.content.exists(b) for b in blobs)
    out = store.remove("two")
    assert out == [{"Untagged": "two:latest"}, {"Deleted": image.id}]
    with pytest.raises(ImageNotFound):
        store.get(image.id)
    assert not any(store.content.exists(b) for b in blobs)


def test_remove_by_digest_reference_only_untags_it_while_other_names_remain(
    store: ImageStore,
) -> None:
    manifest = make_image(store, {"a": b"1"})
    image = store.add(manifest, repo_digest=f"docker.io/library/x@{manifest}")
    store.tag(image, "one")
    assert store.remove(f"x@{manifest}") == [{"Untagged": f"x@{manifest}"}]
    assert store.get("one").id == image.id and store.get("one").repo_digests == []
    assert store.remove("one") == [{"Untagged": "one:latest"}, {"Deleted": image.id}]
    # an image whose only name is a digest reference goes with it
    manifest = make_image(store, {"b": b"2"})
    image = store.add(manifest, repo_digest=f"docker.io/library/x@{manifest}")
    assert store.remove(f"x@{manifest}") == [
        {"Untagged": f"x@{manifest}"},
        {"Deleted": image.id},
    ]


def test_remove_keeps_shared_blobs(store: ImageStore) -> None:
    a = store.add(make_image(store, {"same": b"1"}, cmd=["a"]))
    b = store.add(make_image(store, {"same": b"1"}, cmd=["b"]))
    assert a.id != b.id and a.layers == b.layers
    store.remove(a.id)
    assert store.content.exists(b.layers[0]["digest"])
    assert store.get(b.id).id == b.id


def test_remove_in_use_refused_unless_forced(store: ImageStore) -> None:
    image = store.add(make_image(store, {"a": b"1"}))
    store.tag(image, "used")
    store.register_use(image, "container-1")
    with pytest.raises(ImageInUse, match="container-1"):
        store.remove("used")
    with pytest.raises(ImageInUse):
        store.remove(image.id)
    assert store.get("used").id == image.id
    store.unregister_use(image, "container-1")
    store.register_use(image, "container-2")
    assert store.users(image) == ["container-2"]
    out = store.remove("used", force=True)
    assert {"Deleted": image.id} in out
    with pytest.raises(ImageNotFound):
        store.get(image.id)


def test_remove_by_id_with_several_names_needs_force(store: ImageStore) -> None:
    image = store.add(make_image(store, {"a": b"1"}))
    store.tag(image, "one")
    store.tag(image, "two")
    with pytest.raises(ImageInUse, match="multiple repositories"):
        store.remove(image.id)
    assert store.remove(image.id, force=True)[-1] == {"Deleted": image.id}


def test_tag_moves_name(store: ImageStore) -> None:
    a = store.add(make_image(store, {"a": b"1"}))
    b = store.add(make_image(store, {"b": b"2"}))
    store.tag(a, "app")
    store.tag(b, "app")
    assert store.get("app").id == b.id
    assert store.get(a.id).tags == []
    assert store.untag("app") == b.id
    with pytest.raises(ImageNotFound):
        store.untag("app")


def test_prune(store: ImageStore) -> None:
    dangling = store.add(make_image(store, {"a": b"1"}))
    named = store.add(make_image(store, {"b": b"2"}))
    used = store.add(make_image(store, {"c": b"3"}))
    store.tag(named, "named")
    store.register_use(used, "c1")
    out = store.prune()
    assert out["ImagesDeleted"] == [{"Deleted": dangling.id}]
    assert out["SpaceReclaimed"] > 0
    assert {i.id for i in store.list()} == {named.id, used.id}
    out = store.prune(dangling_only=False)
    assert {"Deleted": named.id} in out["ImagesDeleted"]
    assert [i.id for i in store.list()] == [used.id]


def test_metadata_survives_reopen(tmp_path: Path) -> None:
    with ImageStore(tmp_path / "s") as s:
        image = s.add(make_image(s, {"a": b"1"}))
        s.tag(image, "keep")
    with ImageStore(tmp_path / "s") as s:
        assert s.get("keep").id == image.id


def test_blob_children() -> None:
    doc = {
        "config": {"digest": "sha256:c"},
        "layers": [{"digest": "sha256:l"}],
        "manifests": [{"digest": "sha256:m"}],
    }
    assert sorted(blob_children("x", json.dumps(doc).encode())) == [
        "sha256:c",
        "sha256:l",
        "sha256:m",
    ]
    assert blob_children("x", gzip.compress(b"{}")) == []


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static")
def test_busybox_into_store_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert busybox.main(["--store", str(tmp_path / "s")]) == 0
    assert busybox.main(["--store", str(tmp_path / "s")]) == 0  # again: same image
    with ImageStore(tmp_path / "s") as s:
        images = s.list()
        assert len(images) == 1
        assert images[0].tags == ["docker.io/library/busybox:latest"]
        assert s.inspect("busybox")["Config"]["Cmd"] == ["sh"]
    assert "busybox:latest sha256:" in capsys.readouterr().out


def test_pull_records_tag_and_repo_digest(store: ImageStore) -> None:
    from types import SimpleNamespace

    from bulkhead.images.reference import parse_reference

    manifest_digest = make_image(store, {"pulled": b"1"})
    index = busybox.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": busybox.MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(store.content.read(manifest_digest)),
                    "platform": busybox.host_platform(),
                }
            ],
        }
    )
    index_digest = busybox.put_blob(store.content, index)

    class Client:
        def pull(self, ref: str, content: Any, platform: Any = None, progress: Any = None) -> Any:
            assert content is store.content
            return SimpleNamespace(
                reference=parse_reference(ref),
                digest=index_digest,
                manifest_digest=manifest_digest,
            )

    image = store.pull(Client(), "localhost:5000/app:1")
    assert image.tags == ["localhost:5000/app:1"]
    assert image.repo_digests == [f"localhost:5000/app@{index_digest}"]
    assert store.get(f"localhost:5000/app@{index_digest}").id == image.id
    assert store.inspect("localhost:5000/app:1")["RepoDigests"] == [
        f"localhost:5000/app@{index_digest}"
    ]
    # The index is kept as a root: gc does not sweep it.
    store.gc()
    assert store.content.exists(index_digest)


def _tag_many(root: str, image_id: str, worker: int) -> None:
    with ImageStore(root) as s:
        for n in range(25):
            s.tag(image_id, f"w{worker}:{n}")
        s.register_use(image_id, f"container-{worker}")


def test_concurrent_processes(tmp_path: Path) -> None:
    """Several processes naming and using one image at once: every change lands."""
    import multiprocessing

    root = str(tmp_path / "s")
    with ImageStore(root) as s:
        image = s.add(make_image(s, {"a": b"1"}))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_tag_many, args=(root, image.id, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ImageStore(root) as s:
        assert len(s.get(image.id).tags) == 100
        assert len(s.users(image)) == 4
        with pytest.raises(ImageInUse):
            s.remove(image.id, force=False)
