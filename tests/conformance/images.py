"""An offline busybox image, written in pure Python, for real container engines to import.

There is no registry to pull from. :func:`build_busybox_archive` turns the
busybox root filesystem of :mod:`bulkhead.devtools.busybox` into one image
archive that both engines load:

* an **OCI image layout** (``oci-layout``, ``index.json``, ``blobs/sha256/...``)
  whose manifest is annotated with the full reference
  (``io.containerd.image.name``) and its tag
  (``org.opencontainers.image.ref.name``), for ``ctr images import``;
* plus Docker's ``manifest.json`` (``Config``/``RepoTags``/``Layers`` pointing
  at the same blobs), which makes the same file a ``docker save`` archive
  (``docker-archive``), the format ``podman load`` names images from.

This is the layout ``docker save`` itself writes since Docker 25. The single
layer is an uncompressed tar with normalised owners and times, so the image
(and its digest) only changes when the host's busybox does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkhead.devtools.busybox import build_rootfs

REFERENCE = "docker.io/library/busybox:latest"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"

# A fixed timestamp keeps the image reproducible (2024-01-01T00:00:00Z).
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def go_arch() -> str:
    """The host's architecture as OCI (GOARCH) spells it."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(frozen=True)
class ImageArchive:
    """What :func:`build_busybox_archive` wrote."""

    path: Path  # the archive (OCI layout + manifest.json, uncompressed tar)
    reference: str  # e.g. docker.io/library/busybox:latest
    manifest_digest: str  # sha256:... of the OCI manifest
    config_digest: str  # sha256:... of the image config: the image ID podman shows
    layer_digest: str  # sha256:... of the (uncompressed) layer: its diff_id too


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(rootfs: Path) -> bytes:
    """A reproducible tar of ``rootfs``: sorted entries, root-owned, fixed mtime, no xattrs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            base = Path(dirpath)
            entries.extend(base / d for d in dirnames)
            entries.extend(base / f for f in sorted(filenames))
        for path in sorted(entries, key=lambda p: p.relative_to(rootfs).as_posix()):
            name = path.relative_to(rootfs).as_posix()
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = EPOCH
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                if info.isdir():
                    info.mode = stat.S_IMODE(path.lstat().st_mode)
                tar.addfile(info)
    return buf.getvalue()


def image_config(layer_diff_id: str, *, cmd: list[str] | None = None) -> dict[str, Any]:
    """The image configuration (OCI image-spec ``config.json``) of a one-layer image."""
    return {
        "created": CREATED,
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": cmd or ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_diff_id]},
        "history": [
            {
                "created": CREATED,
                "created_by": "bulkhead tests: busybox-static rootfs (tests/conformance/images.py)",
            }
        ],
    }


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, *, directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_busybox_archive(
    workdir: str | os.PathLike[str], reference: str = REFERENCE
) -> ImageArchive:
    """Build busybox and write ``workdir/busybox.tar``; ``workdir`` is created if missing."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rootfs = build_rootfs(work / "rootfs")

    layer = layer_tar(rootfs)
    layer_digest = _digest(layer)
    config = _json_bytes(image_config(layer_digest))
    config_digest = _digest(config)
    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    )
    manifest_digest = _digest(manifest)
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    index = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": tag,
                    },
                    "platform": {"architecture": go_arch(), "os": "linux"},
                }
            ],
        }
    )

    def blob(digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    docker_manifest = _json_bytes(
        [{"Config": blob(config_digest), "RepoTags": [reference], "Layers": [blob(layer_digest)]}]
    )

    path = work / "busybox.tar"
    tmp = path.with_suffix(".tar.part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "blobs", b"", directory=True)
        _add_bytes(tar, "blobs/sha256", b"", directory=True)
        _add_bytes(tar, blob(config_digest), config)
        _add_bytes(tar, blob(layer_digest), layer)
        _add_bytes(tar, blob(manifest_digest), manifest)
        _add_bytes(tar, "index.json", index)
        _add_bytes(tar, "manifest.json", docker_manifest)
        _add_bytes(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
    tmp.rename(path)
    return ImageArchive(
        path=path,
        reference=reference,
        manifest_digest=manifest_digest,
        config_digest=config_digest,
        layer_digest=layer_digest,
    )
