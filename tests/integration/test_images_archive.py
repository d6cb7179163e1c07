"""Archives: docker-archive save/load, OCI layouts, import with changes, export; bad input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.devtools.busybox import BUSYBOX
from bulkhead.errors import DigestMismatch, ImageError, ImageNotFound, LayerError
from bulkhead.images import archive, busybox
from bulkhead.images.store import ImageStore

pytestmark = pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_path / "a") as s:
        yield s


@pytest.fixture
def other(tmp_path: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_path / "b") as s:
        yield s


@pytest.fixture
def bb(store: ImageStore) -> Any:
    manifest_digest, _ = busybox.build_busybox_image(store.content)
    image = store.add(manifest_digest)
    store.tag(image, "busybox:latest")
    return store.get(image.id)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _rewrite(path: Path, out: Path, change: dict[str, bytes]) -> None:
    """Copy a tar, replacing the named members' contents."""
    with tarfile.open(path) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name in change:
                data = change[m.name]
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)


def test_save_load_round_trip(
    store: ImageStore, other: ImageStore, bb: Any, tmp_path: Path
) -> None:
    out = tmp_path / "bb.tar"
    archive.save(store, ["busybox"], out)
    members = _members(out)
    manifest = json.loads(members["manifest.json"])
    assert manifest == [
        {
            "Config": f"blobs/sha256/{bb.id[7:]}",
            "RepoTags": ["busybox:latest"],
            "Layers": [f"blobs/sha256/{d[7:]}" for d in bb.diff_ids],
        }
    ]
    # Layers are uncompressed tars named by their diff_id, as docker save writes them.
    layer = members[manifest[0]["Layers"][0]]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == bb.diff_ids[0]
    assert json.loads(members["repositories"]) == {"busybox": {"latest": bb.diff_ids[-1][7:]}}
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "docker.io/library/busybox:latest"
    )
    # Saving is reproducible.
    archive.save(store, ["busybox"], tmp_path / "again.tar")
    assert (tmp_path / "again.tar").read_bytes() == out.read_bytes()

    assert archive.load(other, out) == ["busybox:latest"]
    loaded = other.get("busybox")
    assert loaded.id == bb.id
    assert loaded.diff_ids == bb.diff_ids
    assert other.inspect("busybox")["Config"]["Cmd"] == ["sh"]


def test_load_gzipped_and_from_stream(
    other: ImageStore, store: ImageStore, bb: Any, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    archive.save(store, [bb.id], buf)
    (tmp_path / "bb.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    # Saved by id: no names, so the image is loaded unnamed.
    assert archive.load(other, tmp_path / "bb.tar.gz") == [bb.id]
    assert other.get(bb.id).tags == []
    buf.seek(0)
    assert archive.load(other, buf) == [bb.id]
    # docker load also takes xz and bzip2, and a pipe (not seekable).
    import bz2
    import lzma
    import threading

    for n, data in enumerate([lzma.compress(buf.getvalue()), bz2.compress(buf.getvalue())]):
        read_fd, write_fd = os.pipe()

        def feed(fd: int = write_fd, payload: bytes = data) -> None:
            with os.fdopen(fd, "wb") as w:
                w.write(payload)

        feeder = threading.Thread(target=feed)
        feeder.start()
        with ImageStore(tmp_path / f"s{n}") as s, os.fdopen(read_fd, "rb") as pipe:
            assert archive.load(s, pipe) == [bb.id]
        feeder.join()


def _legacy_archive(tmp_path: Path, *, corrupt: bool = False) -> tuple[Path, str]:
    """A tar in the layout Docker before 25 wrote: <id>.json, <layer>/layer.tar, symlinked duplicates."""
    layer1 = io.BytesIO()
    with tarfile.open(fileobj=layer1, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello from a legacy archive\n"
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    l1 = layer1.getvalue()
    l2 = l1  # the same layer twice: docker save links the second to the first
    diff = "sha256:" + hashlib.sha256(l1).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff, diff]},
            "history": [{"created_by": "a"}, {"created_by": "b"}],
        }
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    layer_ids = ["1" * 64, "2" * 64]
    path = tmp_path / "legacy.tar"
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for lid, body in zip(layer_ids, [l1, l2], strict=True):
            d = tarfile.TarInfo(lid)
            d.type = tarfile.DIRTYPE
            tar.addfile(d)
            add(f"{lid}/VERSION", b"1.0")
            add(f"{lid}/json", json.dumps({"id": lid}).encode())
            if lid == layer_ids[0]:
                add(f"{lid}/layer.tar", body if not corrupt else body[:-1024] + b"x" * 1024)
            else:
                link = tarfile.TarInfo(f"{lid}/layer.tar")
                link.type = tarfile.SYMTYPE
                link.linkname = f"../{layer_ids[0]}/layer.tar"
                tar.addfile(link)
        add(f"{config_hex}.json", config)
        add(
            "manifest.json",
            json.dumps(
                [
                    {
                        "Config": f"{config_hex}.json",
                        "RepoTags": ["legacy/app:v1"],
                        "Layers": [f"{lid}/layer.tar" for lid in layer_ids],
                    }
                ]
            ).encode(),
        )
        add("repositories", json.dumps({"legacy/app": {"v1": layer_ids[-1]}}).encode())
    return path, f"sha256:{config_hex}"


def test_load_legacy_docker_save(store: ImageStore, tmp_path: Path) -> None:
    path, image_id = _legacy_archive(tmp_path)
    assert archive.load(store, path) == ["legacy/app:v1"]
    image = store.get("legacy/app:v1")
    assert image.id == image_id
    assert len(image.layers) == 2
    assert image.layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"


def test_load_corrupt_layer_leaves_no_image(store: ImageStore, tmp_path: Path) -> None:
    path, _ = _legacy_archive(tmp_path, corrupt=True)
    with pytest.raises(DigestMismatch, match="the image config says"):
        archive.load(store, path)
    assert store.list() == []
    with pytest.raises(ImageNotFound):
        store.get("legacy/app:v1")


def test_load_corrupt_blob_in_saved_archive(
    store: ImageStore, other: ImageStore, bb: Any, tmp_path: Path
) -> None:
    out = tmp_path / "bb.tar"
    archive.save(store, ["busybox"], out)
    members = _members(out)
    layer_name = json.loads(members["manifest.json"])[0]["Layers"][0]
    layer = bytearray(members[layer_name])
    layer[700] ^= 0xFF
    _rewrite(out, tmp_path / "bad.tar", {layer_name: bytes(layer)})
    with pytest.raises(DigestMismatch):
        archive.load(other, tmp_path / "bad.tar")
    assert other.list() == []
    # The next load of a good archive succeeds.
    assert archive.load(other, out) == ["busybox:latest"]


def test_oci_layout_dir_and_tar_round_trip(
    store: ImageStore, other: ImageStore, bb: Any, tmp_path: Path
) -> None:
    archive.save_oci(store, ["busybox"], str(tmp_path / "layout") + "/")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    desc = index["manifests"][0]
    assert desc["digest"] == bb.manifest_digest  # blobs as stored: the original manifest
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert archive.load(other, tmp_path / "layout") == ["busybox:latest"]
    assert other.get("busybox").manifest_digest == bb.manifest_digest

    archive.save_oci(store, ["busybox"], tmp_path / "layout.tar")
    with ImageStore(tmp_path / "c") as third:
        assert archive.load(third, tmp_path / "layout.tar") == ["busybox:latest"]
        assert third.get("busybox").id == bb.id


def test_oci_layout_corrupt_blob(other: ImageStore, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    busybox.write_oci_layout(layout)
    image = busybox.make_busybox_image()
    blob = layout / "blobs" / "sha256" / image.layer_digest[7:]
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        archive.load(other, layout)
    assert other.list() == []


def test_load_busybox_oci_layout(other: ImageStore, tmp_path: Path) -> None:
    busybox.write_oci_layout(tmp_path / "layout")
    assert archive.load(other, tmp_path / "layout") == ["busybox:latest"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")
def test_skopeo_interop(store: ImageStore, other: ImageStore, bb: Any, tmp_path: Path) -> None:
    # What we save, skopeo reads.
    archive.save(store, ["busybox"], tmp_path / "bb.tar")
    out = subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{tmp_path / 'bb.tar'}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["Layers"] == bb.diff_ids
    archive.save_oci(store, ["busybox"], tmp_path / "oci.tar")
    out = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{tmp_path / 'oci.tar'}:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["Digest"] == bb.manifest_digest
    # What skopeo writes (a docker-archive as docker save makes, and an OCI layout), we load.
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            f"oci-archive:{tmp_path / 'oci.tar'}:latest",
            f"docker-archive:{tmp_path / 'skopeo.tar'}:example.com/bb:v2",
        ],
        check=True,
    )
    assert archive.load(other, tmp_path / "skopeo.tar") == ["example.com/bb:v2"]
    assert other.get("example.com/bb:v2").id == bb.id
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            f"oci-archive:{tmp_path / 'oci.tar'}:latest",
            f"oci:{tmp_path / 'sk'}:v3",
        ],
        check=True,
    )
    with ImageStore(tmp_path / "c") as third:
        # Only a tag in the layout's annotations: loaded without a name, by id.
        assert archive.load(third, tmp_path / "sk") == [bb.id]


@pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci")
def test_umoci_reads_our_layout(store: ImageStore, bb: Any, tmp_path: Path) -> None:
    archive.save_oci(store, ["busybox"], str(tmp_path / "layout") + "/")
    subprocess.run(
        [
            "umoci",
            "unpack",
            "--rootless",
            "--image",
            f"{tmp_path / 'layout'}:latest",
            str(tmp_path / "bundle"),
        ],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "bundle" / "rootfs" / "bin" / "busybox").exists()


def _rootfs_tar(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("imported\n")
    out = tmp_path / "rootfs.tar"
    archive.export_filesystem(root, out)
    return out


def test_import_with_changes(store: ImageStore, tmp_path: Path) -> None:
    tar = _rootfs_tar(tmp_path)
    image = archive.import_rootfs(
        store,
        tar,
        changes=[
            'CMD ["echo", "hi"]',
            "ENTRYPOINT /bin/sh -c",
            "ENV A=1 B='two words'",
            "ENV LEGACY some value",
            "WORKDIR /srv",
            "WORKDIR app",
            "USER 1000:1000",
            "EXPOSE 80 53/udp 8000-8001",
            'LABEL org.example.name="my image" x=y',
            'VOLUME ["/data"]',
            "VOLUME /cache /logs",
            "STOPSIGNAL SIGINT",
        ],
        ref="imported:1",
        message="from a test",
    )
    assert image.tags == ["docker.io/library/imported:1"]
    cfg = store.inspect("imported:1")["Config"]
    assert cfg["Cmd"] == ["echo", "hi"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh -c"]
    assert cfg["Env"] == ["A=1", "B=two words", "LEGACY=some value"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["User"] == "1000:1000"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Labels"] == {"org.example.name": "my image", "x": "y"}
    assert cfg["Volumes"] == {"/data": {}, "/cache": {}, "/logs": {}}
    assert cfg["StopSignal"] == "SIGINT"
    assert store.history("imported:1")[0]["Comment"] == "from a test"
    assert store.inspect("imported:1")["Comment"] == "from a test"
    # The layer is the tar as given, its diff_id its sha256.
    assert image.diff_ids == ["sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()]


def test_import_compressed_and_bad(store: ImageStore, tmp_path: Path) -> None:
    tar = _rootfs_tar(tmp_path)
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    image = archive.import_rootfs(store, gz)
    assert image.layers[0]["mediaType"].endswith("tar+gzip")
    assert image.diff_ids == ["sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()]
    assert image.tags == []
    with pytest.raises(ImageError, match="not a valid change command"):
        archive.import_rootfs(store, tar, changes=["RUN rm -rf /"])
    with pytest.raises(ImageError, match="EXPOSE"):
        archive.import_rootfs(store, tar, changes=["EXPOSE 99999"])
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a tar" * 100)
    with pytest.raises(LayerError, match="not a tar"):
        archive.import_rootfs(store, junk, ref="junk")
    # Truncated: plain (cut inside busybox's data) and gzip.
    data = tar.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(LayerError, match="not a valid tar"):
        archive.import_rootfs(store, tmp_path / "cut.tar")
    (tmp_path / "cut.tar.gz").write_bytes(gz.read_bytes()[:-2000])
    with pytest.raises(LayerError, match="truncated"):
        archive.import_rootfs(store, tmp_path / "cut.tar.gz")
    assert [i.id for i in store.list()] == [image.id]


def test_export_filesystem_dir(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"data")
    os.link(root / "d" / "f", root / "d" / "hard")
    os.symlink("f", root / "d" / "link")
    os.mkfifo(root / "fifo")
    n = archive.export_filesystem(root, tmp_path / "out.tar")
    assert n == 5
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"d", "d/f", "d/hard", "d/link", "fifo"}
    assert members["d/hard"].islnk() and members["d/hard"].linkname == "d/f"
    assert members["d/link"].issym() and members["d/link"].linkname == "f"
    assert members["fifo"].isfifo()
    assert members["d/f"].uname == ""


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Any]:
    """podman with its storage in the test's directory (vfs: no mounts to clean up)."""
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.skip("needs podman and root")
    # podman refuses a runroot longer than 50 characters: pytest's are longer.
    runroot = tempfile.mkdtemp(prefix="bh-podman-", dir="/tmp")
    base = [
        "podman",
        "--root",
        str(tmp_path / "podman-root"),
        "--runroot",
        runroot,
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]

    def run(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    yield run
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_loads_what_we_save(store: ImageStore, bb: Any, podman: Any, tmp_path: Path) -> None:
    archive.save(store, ["busybox"], tmp_path / "bb.tar")
    assert "Loaded image: docker.io/library/busybox:latest" in podman(
        "load", "-i", str(tmp_path / "bb.tar")
    )
    assert podman("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip() == bb.id[7:]
    archive.save_oci(store, ["busybox"], tmp_path / "oci.tar")
    podman("load", "-i", str(tmp_path / "oci.tar"))


def test_we_load_what_podman_saves(
    store: ImageStore, other: ImageStore, bb: Any, podman: Any, tmp_path: Path
) -> None:
    archive.save(store, ["busybox"], tmp_path / "bb.tar")
    podman("load", "-i", str(tmp_path / "bb.tar"))
    podman("tag", "busybox:latest", "localhost/mine:2")
    # docker save's own layout (<id>.json, <layer>/layer.tar), as podman writes it.
    podman(
        "save", "--format", "docker-archive", "-o", str(tmp_path / "docker.tar"), "localhost/mine:2"
    )
    assert archive.load(other, tmp_path / "docker.tar") == ["localhost/mine:2"]
    assert other.get("localhost/mine:2").id == bb.id
    podman("save", "--format", "oci-archive", "-o", str(tmp_path / "oci.tar"), "localhost/mine:2")
    with ImageStore(tmp_path / "c") as third:
        loaded = archive.load(third, tmp_path / "oci.tar")
        assert third.get(loaded[0]).id == bb.id


def _tar_of(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_load_refuses_paths_leaving_the_archive(store: ImageStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    manifest = json.dumps([{"Config": "../secret.json", "RepoTags": ["x:1"], "Layers": []}])
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "manifest.json").write_text(manifest)
    with pytest.raises(ImageError, match="leaves"):
        archive.load(store, tmp_path / "dir")
    tar = _tar_of(tmp_path / "evil.tar", {"manifest.json": manifest.encode()})
    with pytest.raises(ImageError, match="leaves"):
        archive.load(store, tar)
    with pytest.raises(ImageError, match="not an image archive"):
        archive.load(store, _tar_of(tmp_path / "empty.tar", {"hello": b"x"}))
    assert store.list() == []


def test_load_multi_platform_layout_with_one_platform_present(
    other: ImageStore, tmp_path: Path
) -> None:
    """An index of two platforms where only this host's blobs were copied (skopeo without --all)."""
    layout = tmp_path / "layout"
    busybox.write_oci_layout(layout)
    image = busybox.make_busybox_image()
    index = busybox.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": busybox.MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": "sha256:" + "e" * 64,
                    "size": 500,
                    "platform": {"architecture": "s390x", "os": "linux"},
                },
                {
                    "mediaType": busybox.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": image.manifest_digest,
                    "size": len(image.manifest),
                    "platform": busybox.host_platform(),
                },
            ],
        }
    )
    index_digest = busybox.sha256_digest(index)
    (layout / "blobs" / "sha256" / index_digest[7:]).write_bytes(index)
    (layout / "index.json").write_bytes(
        busybox.canonical_json(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": busybox.MEDIA_TYPE_OCI_INDEX,
                        "digest": index_digest,
                        "size": len(index),
                        "annotations": {"io.containerd.image.name": "example.com/multi:1"},
                    }
                ],
            }
        )
    )
    assert archive.load(other, layout) == ["example.com/multi:1"]
    loaded = other.get("example.com/multi:1")
    assert loaded.manifest_digest == image.manifest_digest
    assert loaded.target == index_digest
