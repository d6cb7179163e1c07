"""The offline default image: ``busybox:latest`` built from Debian's busybox-static.

bulkhead needs an image that exists without a network and without a
registry. Debian's ``busybox-static`` package installs one statically linked
``/bin/busybox``; :func:`bulkhead.devtools.busybox.build_rootfs` lays out a
root filesystem around it (the binary, one symlink per applet as
``busybox --list`` names them, ``/etc/passwd``, ``/etc/group``, ``/tmp``
with mode 1777, ``/root``, ``/proc``, ``/sys``, ``/dev`` ...). This module
turns that directory into a real image, the same objects a registry would
serve:

*layer*
    the root filesystem as one tar, gzip-compressed. The tar is
    *reproducible*: entries sorted by name, every mtime set to the busybox
    binary's (what dpkg unpacked from the package), owners 0:0 with no
    names, modes normalised, and gzip written with mtime 0 and no file
    name. The same package therefore always gives the same layer digest.
*diff_id*
    the sha256 of the *uncompressed* tar; the image config lists diff_ids,
    the manifest lists the compressed blobs.
*image config*
    architecture and os of this host, ``Cmd ["sh"]``, ``Env PATH=...``,
    ``rootfs.diff_ids`` and one ``history`` entry. Its digest is the
    image's id (what ``docker images`` shows as IMAGE ID).
*manifest*
    an OCI image manifest: the config's descriptor and the layer's.
*index*
    an OCI image index with the one manifest, labelled with this host's
    platform, as a multi-platform image from a registry would be.

Everything is written to a content store (:func:`build_busybox_image`) and,
for tools such as skopeo or umoci, to an OCI image layout directory
(:func:`write_oci_layout`). From the command line::

    python -m bulkhead.images.busybox --store /var/lib/bulkhead/images
    python -m bulkhead.images.busybox --oci-layout /tmp/busybox-oci

``--store`` builds the image into an image store and tags it
``busybox:latest`` (``make run`` does this first).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from bulkhead.devtools.busybox import BUSYBOX, build_rootfs, busybox_applets
from bulkhead.oci import image_spec

#: The reference ``make run`` and the tests find the image under.
REFERENCE = "docker.io/library/busybox:latest"
#: Where the engine keeps its images unless told otherwise.
DEFAULT_STORE = "/var/lib/bulkhead/images"

MEDIA_TYPE_OCI_INDEX = image_spec.MEDIA_TYPE_OCI_INDEX
MEDIA_TYPE_OCI_MANIFEST = image_spec.MEDIA_TYPE_OCI_MANIFEST
MEDIA_TYPE_OCI_CONFIG = image_spec.MEDIA_TYPE_OCI_CONFIG
MEDIA_TYPE_OCI_LAYER_GZIP = image_spec.MEDIA_TYPE_OCI_LAYER_GZIP

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BlobSink(Protocol):
    """What this module needs of a content store (:class:`bulkhead.images.content.ContentStore`)."""

    def exists(self, digest: str) -> bool: ...

    def writer(self, ref: str, expected: str | None = None, size: int | None = None) -> Any: ...


def host_platform() -> dict[str, str]:
    """This host's platform in the image spec's words (Go's GOARCH names), as JSON."""
    plat = image_spec.host_platform()
    out = {"architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        out["variant"] = plat.variant
    return out


def busybox_applets_list(busybox: Path = BUSYBOX) -> list[str]:
    """The applets the image links in ``/bin`` (``busybox --list``)."""
    return [a for a in busybox_applets(busybox) if a != "busybox"]


#: The ``sha256:<hex>`` digest of some bytes (the image spec's :func:`digest_of`).
sha256_digest = image_spec.digest_of


def put_blob(content: BlobSink, data: bytes) -> str:
    """Store ``data`` in ``content`` through its verifying writer; return its digest."""
    digest = sha256_digest(data)
    if content.exists(digest):
        return digest
    writer = content.writer(digest, expected=digest, size=len(data))
    try:
        offset = int(getattr(writer, "offset", 0) or 0)
        writer.write(data[offset:])
        writer.commit(digest, len(data))
    except BaseException:
        try:
            writer.abort()
        except Exception:
            pass
        raise
    return digest


def canonical_json(value: Any) -> bytes:
    """JSON bytes as bulkhead writes image objects: compact, keys in the order given."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def reproducible_tar(root: str | os.PathLike[str], out: BinaryIO, *, mtime: int = 0) -> None:
    """Write the tree under ``root`` to ``out`` as a reproducible tar.

    Entries are sorted, names relative (``bin/sh``, no ``./``), owners
    0:0 without user or group names, mtimes all ``mtime``; directories keep
    0755 (1777 when sticky, as ``/tmp``), regular files
    0755 when executable and 0644 otherwise.
    """
    base = os.fspath(root)
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        for name in dirnames + filenames:
            names.append(name if rel == "." else f"{rel}/{name}")
    names.sort()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = os.path.join(base, name)
            st = os.lstat(path)
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if st.st_mode & stat.S_ISVTX else 0o755
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.type = tarfile.REGTYPE
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            # Sockets, fifos and devices are not part of this image.


def gzip_reproducible(data: bytes, level: int = 6) -> bytes:
    """gzip ``data`` with mtime 0 and no file name in the header (same bytes every run)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=level, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _iso(ts: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class BusyboxImage:
    """The objects of the busybox image, as stored: bytes and digests."""

    index: bytes
    manifest: bytes
    config: bytes
    layer: bytes
    diff_id: str

    @property
    def index_digest(self) -> str:
        return sha256_digest(self.index)

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def layer_digest(self) -> str:
        return sha256_digest(self.layer)

    def blobs(self) -> dict[str, bytes]:
        """Every blob by digest."""
        return {
            self.layer_digest: self.layer,
            self.config_digest: self.config,
            self.manifest_digest: self.manifest,
            self.index_digest: self.index,
        }


def make_busybox_image(busybox: Path = BUSYBOX) -> BusyboxImage:
    """Build the busybox image's objects in memory (no store, no network)."""
    if not busybox.exists():
        raise FileNotFoundError(
            f"{busybox} not found: install Debian's busybox-static package "
            "(apt install busybox-static)"
        )
    mtime = int(busybox.stat().st_mtime)
    with tempfile.TemporaryDirectory(prefix="bulkhead-busybox-") as tmp:
        build_rootfs(tmp, busybox)
        raw = io.BytesIO()
        reproducible_tar(tmp, raw, mtime=mtime)
    tar_bytes = raw.getvalue()
    diff_id = sha256_digest(tar_bytes)
    layer = gzip_reproducible(tar_bytes)
    plat = host_platform()
    created = _iso(mtime)
    config: dict[str, Any] = {
        "created": created,
        "architecture": plat["architecture"],
        **({"variant": plat["variant"]} if "variant" in plat else {}),
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": f"bulkhead: ADD {busybox} (Debian busybox-static) + applet links, /etc",
            },
            {"created": created, "created_by": 'CMD ["sh"]', "empty_layer": True},
        ],
    }
    config_bytes = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": MEDIA_TYPE_OCI_LAYER_GZIP,
                "digest": sha256_digest(layer),
                "size": len(layer),
            }
        ],
    }
    manifest_bytes = canonical_json(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": sha256_digest(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": plat,
            }
        ],
    }
    return BusyboxImage(
        index=canonical_json(index),
        manifest=manifest_bytes,
        config=config_bytes,
        layer=layer,
        diff_id=diff_id,
    )


def build_busybox_image(content_store: BlobSink, busybox: Path = BUSYBOX) -> tuple[str, str]:
    """Build ``busybox:latest`` into ``content_store``; return (manifest digest, config digest).

    The blobs written are the layer, the config, the manifest and an index
    naming the manifest with this host's platform. Digests are stable: a
    second build with the same busybox binary writes nothing new.
    """
    image = make_busybox_image(busybox)
    for data in (image.layer, image.config, image.manifest, image.index):
        put_blob(content_store, data)
    return image.manifest_digest, image.config_digest


def write_oci_layout(
    directory: str | os.PathLike[str],
    busybox: Path = BUSYBOX,
    *,
    ref_name: str = "latest",
) -> str:
    """Write the busybox image as an OCI image layout in ``directory``; return the manifest digest.

    The layout is ``oci-layout``, ``index.json`` (one manifest, annotated
    ``org.opencontainers.image.ref.name`` = ``ref_name``) and
    ``blobs/sha256/<hex>``: what ``skopeo copy oci:DIR:latest ...`` or
    ``umoci unpack --image DIR:latest`` read.
    """
    image = make_busybox_image(busybox)
    root = Path(directory)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest, data in image.blobs().items():
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "platform": host_platform(),
                "annotations": {
                    "io.containerd.image.name": REFERENCE,
                    "org.opencontainers.image.ref.name": ref_name,
                },
            }
        ],
    }
    (root / "index.json").write_bytes(canonical_json(index))
    return image.manifest_digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bulkhead.images.busybox",
        description="Build the offline busybox:latest image from Debian's busybox-static.",
    )
    parser.add_argument(
        "--store",
        help=f"image store root to build into and tag busybox:latest (e.g. {DEFAULT_STORE})",
    )
    parser.add_argument("--oci-layout", help="also write an OCI image layout directory here")
    parser.add_argument("--busybox", default=str(BUSYBOX), help="the static busybox binary")
    args = parser.parse_args(argv)
    if not args.store and not args.oci_layout:
        parser.error("give --store DIR and/or --oci-layout DIR")
    binary = Path(args.busybox)
    try:
        if args.store:
            from bulkhead.images.store import ImageStore

            store = ImageStore(args.store)
            try:
                with store.content.lease():  # no gc between the blobs and the image
                    manifest_digest, config_digest = build_busybox_image(store.content, binary)
                    image = store.add(manifest_digest, index_digest=None)
                    store.tag(image, REFERENCE)
            finally:
                store.close()
            print(f"busybox:latest {config_digest} in {args.store}")
        if args.oci_layout:
            digest = write_oci_layout(args.oci_layout, binary)
            print(f"busybox:latest {digest} in OCI layout {args.oci_layout}")
    except Exception as exc:  # one line for the user, not a traceback
        print(f"bulkhead.images.busybox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
