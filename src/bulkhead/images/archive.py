"""Images in and out of files: docker-archive, OCI image layout, import and export.

Formats
-------
*docker-archive* (``docker save`` / ``docker load``)
    A tar holding ``manifest.json`` — a list of
    ``{"Config": path, "RepoTags": [...], "Layers": [paths]}`` — the image
    configs, the layers as *uncompressed* tars, and ``repositories``
    (``{"busybox": {"latest": "<top layer id>"}}``, for old clients). Docker
    25 and later write the blobs in an OCI layout inside the same tar
    (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) and point
    ``manifest.json`` at them; older Dockers wrote ``<id>.json`` and
    ``<layer id>/layer.tar``. :func:`save` writes the Docker 25 form (so
    both old and new readers take it); :func:`load` reads all of them,
    gzip/bzip2/xz-compressed or not.
*OCI image layout* (``skopeo copy oci:DIR``, ``umoci``, ``docker buildx --output type=oci``)
    ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an
    index whose entries are named by the annotations
    ``org.opencontainers.image.ref.name`` and ``io.containerd.image.name``)
    and ``blobs/<algorithm>/<hex>``, as a directory or a tar of one.
    :func:`save_oci` writes one with the blobs as stored (compressed
    layers, the original manifest); :func:`load` reads one.
*rootfs import* (``docker import``)
    One tar of a whole filesystem becomes a one-layer image;
    ``changes`` are Dockerfile instructions applied to its config
    (:func:`apply_changes`).
*filesystem export* (``docker export``)
    A container's merged filesystem as one plain tar
    (:func:`export_filesystem`).

Loading is all or nothing: every blob is copied through the content store's
verifying writer and every layer's diff_id checked against its config before
the first image is recorded, so a corrupt archive raises and leaves no image
(and no name) behind.
"""

from __future__ import annotations

import bz2
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import shlex
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from bulkhead.errors import (
    DigestMismatch,
    ImageError,
    InvalidReference,
    LayerError,
    ManifestError,
    UnsupportedMediaType,
)
from bulkhead.images.busybox import canonical_json, host_platform
from bulkhead.images.reference import parse_reference
from bulkhead.images.store import Image, ImageStore, familiar, normalize_reference
from bulkhead.oci.image_spec import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    digest_of,
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_XZ = b"\xfd7zXZ\x00"
_BZ2 = b"BZh"
_CHUNK = 1 << 20

_DOCUMENT_MEDIA_TYPES = frozenset(
    {
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)

PathOrFile = str | os.PathLike[str] | BinaryIO


# --- compression --------------------------------------------------------------------


def compression_of(head: bytes) -> str | None:
    """``"gzip"``, ``"zstd"``, ``"xz"``, ``"bzip2"`` or None (plain) from a stream's first bytes."""
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD):
        return "zstd"
    if head.startswith(_XZ):
        return "xz"
    if head.startswith(_BZ2):
        return "bzip2"
    return None


def peeked(raw: BinaryIO) -> tuple[str | None, BinaryIO]:
    """The compression of ``raw`` (from its first bytes) and a stream that still starts at them."""
    peek = _Peek(raw)
    return compression_of(peek.head), cast(BinaryIO, io.BufferedReader(peek, _CHUNK))


def decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw``, decompressed when it is gzip, zstd, xz or bzip2 (detected, not trusted)."""
    kind, stream = peeked(raw)
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    if kind == "zstd":
        import zstandard

        return cast(
            BinaryIO, zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        )
    if kind == "xz":
        return cast(BinaryIO, lzma.LZMAFile(stream))
    if kind == "bzip2":
        return cast(BinaryIO, bz2.BZ2File(stream))
    return stream


class _Peek(io.RawIOBase):
    """A stream whose first bytes were read ahead (to detect compression) but not lost."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.head = raw.read(8)
        self._pending = self.head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile]
    with contextlib.suppress(ImportError):
        import zstandard

        errors.append(zstandard.ZstdError)
    return tuple(errors)


class _Hashing(io.RawIOBase):
    """Reads through ``raw``, hashing (sha256) and counting what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self.hash.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _diff_id(stream: BinaryIO, *, check_tar: bool = False, what: str = "layer") -> tuple[str, int]:
    """sha256 and length of a layer's uncompressed tar.

    With ``check_tar`` the tar is also read entry by entry, so a truncated
    or corrupt one is refused (:class:`LayerError`) here rather than when
    it is unpacked. A corrupt compressed stream always is.
    """
    try:
        with contextlib.closing(decompressed(stream)) as plain:
            hashing = _Hashing(plain)
            if check_tar:
                reader = io.BufferedReader(hashing, _CHUNK)
                _check_tar_head(reader.peek(512)[:512], what)
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    for _ in tar:
                        pass
                while reader.read(_CHUNK):  # trailing zero blocks count too
                    pass
            hashing.drain()
    except tarfile.TarError as exc:
        raise LayerError(f"{what}: not a valid tar archive: {exc}") from None
    except _decompression_errors() as exc:
        raise LayerError(f"{what}: corrupt or truncated compressed data: {exc}") from None
    return f"sha256:{hashing.hash.hexdigest()}", hashing.size


def _check_tar_head(head: bytes, what: str) -> None:
    if len(head) < 512 or (head[257:262] != b"ustar" and any(head[:512])):
        raise LayerError(f"{what} is not a tar archive")


# --- reading archives: tar files and directories alike ------------------------------


class _Source:
    """Named members of an archive (a tar or a directory)."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"{name}: larger than {limit} bytes")
        return data

    def close(self) -> None:
        pass


def _clean(name: str) -> str:
    clean = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    if name.replace("\\", "/").startswith("../") or posixpath.normpath(name).startswith(".."):
        raise ImageError(f"archive member {name!r} leaves the archive")
    return clean


class _TarSource(_Source):
    def __init__(self, fileobj: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115
        self._members: dict[str, tarfile.TarInfo] = {}
        for m in self._tar.getmembers():
            self._members[_clean(m.name)] = m

    def _resolve(self, name: str) -> tarfile.TarInfo:
        name = _clean(name)
        for _ in range(16):  # old docker save linked shared layer.tar files
            m = self._members.get(name)
            if m is None:
                raise ImageError(f"archive has no {name!r}")
            if m.issym():
                name = _clean(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = _clean(m.linkname)
            else:
                return m
        raise ImageError(f"archive member {name!r}: too many links")

    def exists(self, name: str) -> bool:
        try:
            self._resolve(name)
        except ImageError:
            return False
        return True

    def open(self, name: str) -> BinaryIO:
        m = self._resolve(name)
        f = self._tar.extractfile(m)
        if f is None:
            raise ImageError(f"archive member {name!r} is not a file")
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()


class _DirSource(_Source):
    def __init__(self, root: str) -> None:
        self._root = os.path.realpath(root)

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self._root, _clean(name)))
        if path != self._root and not path.startswith(self._root + os.sep):
            raise ImageError(f"{name!r} leaves the layout directory")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{self._root} has no {name!r}") from None


@contextlib.contextmanager
def _open_source(source: PathOrFile) -> Iterator[_Source]:
    """An archive as a :class:`_Source`; compressed tars are decompressed to a temporary file."""
    if not isinstance(source, str | os.PathLike):
        stream: BinaryIO = source
        owned = None
    elif os.path.isdir(source):
        yield _DirSource(os.fspath(source))
        return
    else:
        stream = owned = open(source, "rb")  # noqa: SIM115
    try:
        with tempfile.TemporaryFile(prefix="bulkhead-archive-") as spool:
            seekable = getattr(stream, "seekable", lambda: False)()
            if seekable:
                start = stream.tell()
                kind = compression_of(stream.read(8))
                stream.seek(start)
            if seekable and kind is None:
                src = _TarSource(stream)
            else:
                # tarfile needs to seek: a plain copy of the (decompressed) stream.
                with contextlib.closing(decompressed(stream)) as plain:
                    shutil.copyfileobj(plain, spool, _CHUNK)
                spool.seek(0)
                src = _TarSource(cast(BinaryIO, spool))
            try:
                yield src
            finally:
                src.close()
    except tarfile.TarError as exc:
        raise ImageError(f"not an image archive: {exc}") from None
    finally:
        if owned is not None:
            owned.close()


# --- load ------------------------------------------------------------------------


@dataclass
class _Pending:
    """One image of an archive, its blobs stored, waiting to be recorded."""

    target: str
    names: list[str] = field(default_factory=list)


def _or_unnamed(names: list[str]) -> list[str | None]:
    """The names to write an image under; one ``None`` entry (no name) when it has none."""
    return [*names] if names else [None]


def _blob_name(digest: str) -> str:
    algorithm, hexd = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexd}"


def _ingest(
    store: ImageStore, src: _Source, name: str, digest: str | None, size: int | None
) -> str:
    with src.open(name) as f:
        return str(store.content.ingest_from(f, digest, size))


def _load_oci(store: ImageStore, src: _Source, repo_tags: dict[str, list[str]]) -> list[_Pending]:
    try:
        layout = json.loads(src.read("oci-layout"))
        index = json.loads(src.read("index.json"))
    except ValueError as exc:
        raise ManifestError(f"OCI layout: {exc}") from None
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise ManifestError(
            f"OCI layout version {layout.get('imageLayoutVersion')!r} is not supported"
        )
    pending: list[_Pending] = []
    copied: set[str] = set()

    def copy(desc: dict[str, Any], required: bool, top: bool = False) -> None:
        digest = desc.get("digest")
        if not isinstance(digest, str) or digest in copied:
            return
        if not src.exists(_blob_name(digest)):
            if required:
                raise ImageError(f"OCI layout lacks blob {digest}")
            return
        _ingest(store, src, _blob_name(digest), digest, desc.get("size"))
        copied.add(digest)
        mt = desc.get("mediaType")
        if top or mt in _DOCUMENT_MEDIA_TYPES:
            doc = json.loads(store.content.read(digest))
            if not isinstance(doc, dict):
                return
            for child in doc.get("manifests") or []:
                copy(child, required=False)  # other platforms may be left out
            if isinstance(doc.get("config"), dict):
                copy(doc["config"], required=True)
            for layer in doc.get("layers") or []:
                copy(layer, required=True)

    for desc in index.get("manifests") or []:
        copy(desc, required=True, top=True)
        annotations = desc.get("annotations") or {}
        names: list[str] = []
        full = annotations.get(ANNOTATION_IMAGE_NAME)
        ref_name = annotations.get(ANNOTATION_REF_NAME)
        if full:
            names.append(full)
        elif ref_name and ("/" in ref_name or ":" in ref_name):
            with contextlib.suppress(InvalidReference):
                names.append(str(parse_reference(ref_name)))
        pending.append(_Pending(target=desc["digest"], names=names))
    # Docker's own archives: names may only be in manifest.json.
    for p in pending:
        if not p.names:
            config = _config_of(store, p.target)
            p.names = list(repo_tags.get(config, []))
    return pending


def _config_of(store: ImageStore, target: str) -> str:
    with contextlib.suppress(Exception):
        return str(store.resolve_manifest(target)[1]["config"]["digest"])
    return ""


def _load_docker(store: ImageStore, src: _Source, entries: list[Any]) -> list[_Pending]:
    pending: list[_Pending] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ManifestError("manifest.json: an entry without Config")
        config_bytes = src.read(entry["Config"])
        config_digest = digest_of(config_bytes)
        stem = posixpath.basename(entry["Config"]).removesuffix(".json")
        if len(stem) == 64 and stem != config_digest[7:]:
            raise DigestMismatch(
                f"{entry['Config']}: the image config hashes to {config_digest}",
                expected=f"sha256:{stem}",
                actual=config_digest,
            )
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise ManifestError(f"{entry['Config']}: {exc}") from None
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layer_paths = list(entry.get("Layers") or [])
        if len(layer_paths) != len(diff_ids):
            raise ManifestError(
                f"{entry['Config']}: {len(layer_paths)} layers for {len(diff_ids)} diff_ids"
            )
        store.content.write_blob(config_bytes, config_digest)
        layers: list[dict[str, Any]] = []
        for path, diff_id in zip(layer_paths, diff_ids, strict=True):
            digest = _ingest(store, src, path, None, None)
            with store.content.open(digest) as blob:
                kind = compression_of(blob.read(8))
                blob.seek(0)
                actual, _ = _diff_id(blob, what=f"layer {path}")
            if actual != diff_id:
                raise DigestMismatch(
                    f"layer {path} unpacks to {actual}, the image config says {diff_id}",
                    expected=diff_id,
                    actual=actual,
                )
            media_type = {
                None: MEDIA_TYPE_OCI_LAYER,
                "gzip": MEDIA_TYPE_OCI_LAYER_GZIP,
                "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD,
            }.get(kind)
            if media_type is None:
                raise UnsupportedMediaType(f"layer {path}: {kind} compression", kind)
            layers.append(
                {"mediaType": media_type, "digest": digest, "size": store.content.info(digest).size}
            )
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_TYPE_OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": layers,
            }
        )
        target = store.content.write_blob(manifest)
        names = [str(parse_reference(t)) for t in entry.get("RepoTags") or []]
        pending.append(_Pending(target=target, names=names))
    return pending


def load(store: ImageStore, source: PathOrFile) -> list[str]:
    """Load the images of an archive into ``store``; returns what was loaded.

    ``source`` is a tar (a path or a binary stream; gzip, bzip2, xz or plain)
    in docker-archive or OCI-layout form, or a directory holding either.
    The result lists each loaded image's names (``busybox:latest``) or, for
    an image without a name, its id, as ``docker load`` prints them.
    """
    lease = getattr(store.content, "lease", None)
    with lease() if lease is not None else contextlib.nullcontext(), _open_source(source) as src:
        repo_tags: dict[str, list[str]] = {}
        entries: list[Any] | None = None
        if src.exists("manifest.json"):
            try:
                entries = json.loads(src.read("manifest.json"))
            except ValueError as exc:
                raise ManifestError(f"manifest.json: {exc}") from None
            if not isinstance(entries, list):
                raise ManifestError("manifest.json is not a list")
            for e in entries:
                if isinstance(e, dict) and isinstance(e.get("Config"), str):
                    stem = posixpath.basename(e["Config"]).removesuffix(".json")
                    repo_tags[f"sha256:{stem}"] = [
                        str(parse_reference(t)) for t in e.get("RepoTags") or []
                    ]
        if src.exists("oci-layout") and src.exists("index.json"):
            pending = _load_oci(store, src, repo_tags)
        elif entries is not None:
            pending = _load_docker(store, src, entries)
        else:
            raise ImageError("not an image archive: no manifest.json and no OCI layout")
        # Everything stored and checked: check each image, then record them all.
        for p in pending:
            store.check_manifest(store.resolve_manifest(p.target)[1])
        loaded: list[str] = []
        for p in pending:
            image = store.add(p.target)
            for name in p.names:
                store.tag(image, name)
                loaded.append(familiar(name))
            if not p.names:
                loaded.append(image.id)
        return loaded


# --- save --------------------------------------------------------------------


class _TarWriter:
    """A reproducible tar being written: fixed mtimes, owners 0:0, directories once."""

    def __init__(self, out: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._dirs: set[str] = set()
        self.names: set[str] = set()

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                info = self._info(d + "/")
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self._tar.addfile(info)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_file(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, f: IO[bytes], size: int) -> None:
        if name in self.names:
            return
        self._parents(name)
        info = self._info(name)
        info.mode = 0o644
        info.size = size
        self._tar.addfile(info, f)
        self.names.add(name)

    def close(self) -> None:
        self._tar.close()


@contextlib.contextmanager
def _output(out: PathOrFile) -> Iterator[BinaryIO]:
    if not isinstance(out, str | os.PathLike):
        yield out
        return
    tmp = f"{os.fspath(out)}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _images_for(store: ImageStore, refs: Sequence[str]) -> list[tuple[Image, list[str]]]:
    """The images ``refs`` name, each once, with the names to save it under."""
    out: dict[str, tuple[Image, list[str]]] = {}
    for ref in refs:
        image = store.get(ref)
        names = out.setdefault(image.id, (image, []))[1]
        with contextlib.suppress(ImageError):
            name = normalize_reference(ref)
            if name in image.tags and name not in names:
                names.append(name)
    return list(out.values())


def save(store: ImageStore, refs: Sequence[str], out: PathOrFile) -> None:
    """Write ``refs`` as a docker-archive tar (Docker 25's form, readable by older ones too).

    Layers are written uncompressed (as ``docker save`` does) under
    ``blobs/sha256/<diff_id>``, each checked against its diff_id.
    """
    images = _images_for(store, refs)
    if not images:
        raise ImageError("nothing to save: no image named")
    with _output(out) as f:
        tar = _TarWriter(f)
        manifest_json: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        index_entries: list[dict[str, Any]] = []
        for image, names in images:
            config_bytes = store.content.read(image.id)
            tar.add_bytes(_blob_name(image.id), config_bytes)
            layer_descs: list[dict[str, Any]] = []
            for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
                name = _blob_name(diff_id)
                size = _add_uncompressed_layer(store, tar, layer["digest"], diff_id, name)
                layer_descs.append(
                    {"mediaType": MEDIA_TYPE_OCI_LAYER, "digest": diff_id, "size": size}
                )
            manifest = canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                    "config": {
                        "mediaType": MEDIA_TYPE_OCI_CONFIG,
                        "digest": image.id,
                        "size": len(config_bytes),
                    },
                    "layers": layer_descs,
                }
            )
            manifest_digest = digest_of(manifest)
            tar.add_bytes(_blob_name(manifest_digest), manifest)
            desc = {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
            }
            for n in _or_unnamed(names):
                entry = dict(desc)
                if n is not None:
                    ref = parse_reference(n)
                    entry["annotations"] = {
                        ANNOTATION_IMAGE_NAME: n,
                        ANNOTATION_REF_NAME: ref.tag or "latest",
                    }
                    repo = familiar(n).rsplit(":", 1)[0]
                    if image.diff_ids:
                        top = image.diff_ids[-1][7:]
                        repositories.setdefault(repo, {})[ref.tag or "latest"] = top
                index_entries.append(entry)
            manifest_json.append(
                {
                    "Config": _blob_name(image.id),
                    "RepoTags": [familiar(n) for n in names] or None,
                    "Layers": [_blob_name(d) for d in image.diff_ids],
                }
            )
        index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": index_entries}
        tar.add_bytes("index.json", canonical_json(index))
        tar.add_bytes("manifest.json", canonical_json(manifest_json))
        tar.add_bytes("oci-layout", OCI_LAYOUT)
        if repositories:
            tar.add_bytes("repositories", canonical_json(repositories))
        tar.close()


def _add_uncompressed_layer(
    store: ImageStore, tar: _TarWriter, digest: str, diff_id: str, name: str
) -> int:
    if name in tar.names:
        return 0
    with tempfile.TemporaryFile(prefix="bulkhead-save-") as spool:
        h = hashlib.sha256()
        size = 0
        with store.content.open(digest) as blob, contextlib.closing(decompressed(blob)) as plain:
            while chunk := plain.read(_CHUNK):
                h.update(chunk)
                spool.write(chunk)
                size += len(chunk)
        if f"sha256:{h.hexdigest()}" != diff_id:
            raise DigestMismatch(
                f"layer {digest} unpacks to sha256:{h.hexdigest()}, the image config says {diff_id}",
                expected=diff_id,
                actual=f"sha256:{h.hexdigest()}",
            )
        spool.seek(0)
        tar.add_file(name, spool, size)
    return size


def save_oci(
    store: ImageStore, refs: Sequence[str], out: str | os.PathLike[str] | BinaryIO
) -> None:
    """Write ``refs`` as an OCI image layout: a directory when ``out`` is one (or ends in ``/``), else a tar.

    Blobs are written as stored (compressed layers, the original manifests,
    so digests match the registry's); ``index.json`` names each manifest
    with ``org.opencontainers.image.ref.name`` (the tag) and
    ``io.containerd.image.name`` (the full name).
    """
    images = _images_for(store, refs)
    if not images:
        raise ImageError("nothing to save: no image named")
    entries: list[dict[str, Any]] = []
    blobs: list[str] = []
    for image, names in images:
        data = store.content.read(image.manifest_digest)
        config = image.config
        desc: dict[str, Any] = {
            "mediaType": image.manifest.get("mediaType", MEDIA_TYPE_OCI_MANIFEST),
            "digest": image.manifest_digest,
            "size": len(data),
            "platform": {
                "architecture": config.get("architecture", ""),
                "os": config.get("os", ""),
                **({"variant": config["variant"]} if config.get("variant") else {}),
            },
        }
        for n in _or_unnamed(names):
            entry = dict(desc)
            if n is not None:
                entry["annotations"] = {
                    ANNOTATION_IMAGE_NAME: n,
                    ANNOTATION_REF_NAME: parse_reference(n).tag or "latest",
                }
            entries.append(entry)
        for digest in [image.manifest_digest, image.id, *(la["digest"] for la in image.layers)]:
            if digest not in blobs:
                blobs.append(digest)
    index = canonical_json(
        {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": entries}
    )
    as_dir = isinstance(out, str | os.PathLike) and (
        os.path.isdir(out) or os.fspath(out).endswith("/")
    )
    if as_dir:
        assert isinstance(out, str | os.PathLike)
        root = Path(out)
        for digest in blobs:
            path = root / _blob_name(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            with store.content.open(digest) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        (root / "oci-layout").write_bytes(OCI_LAYOUT)
        (root / "index.json").write_bytes(index)
        return
    with _output(out) as f:
        tar = _TarWriter(f)
        tar.add_bytes("oci-layout", OCI_LAYOUT)
        for digest in blobs:
            with store.content.open(digest) as src:
                tar.add_file(_blob_name(digest), src, store.content.info(digest).size)
        tar.add_bytes("index.json", index)
        tar.close()


# --- import --------------------------------------------------------------------


CHANGE_COMMANDS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


def _json_or_shell(rest: str, instruction: str) -> list[str]:
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    if not text:
        raise ImageError(f"{instruction} requires at least one argument")
    return ["/bin/sh", "-c", text]


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    words = shlex.split(rest, posix=True)
    if not words:
        raise ImageError(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        # The legacy form: "ENV key value with spaces" sets one variable.
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise ImageError(f"{instruction} {key}: missing value (use {key}=value)")
        return [(key, value.strip())]
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ImageError(f"{instruction}: {w!r} is not key=value")
        out.append((key, value))
    return out


def apply_changes(config: dict[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """Apply Dockerfile instructions (``docker import --change``) to a container config.

    ``config`` is the image config's ``config`` object (``Cmd``, ``Env``, ...);
    it is changed in place and returned. CMD, ENTRYPOINT and VOLUME take the
    JSON form or the shell form; ENV and LABEL ``k=v`` pairs (quoted as a
    shell quotes) or the legacy ``ENV k v``. Other instructions are refused,
    as Docker refuses them.
    """
    for change in changes:
        instruction, _, rest = change.strip().partition(" ")
        instruction = instruction.upper()
        if instruction not in CHANGE_COMMANDS:
            raise ImageError(f"{instruction or change!r} is not a valid change command")
        if instruction == "CMD":
            config["Cmd"] = _json_or_shell(rest, instruction)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(rest, instruction)
        elif instruction == "ENV":
            env: list[str] = list(config.get("Env") or [])
            for key, value in _pairs(rest, instruction):
                env = [e for e in env if e.split("=", 1)[0] != key]
                env.append(f"{key}={value}")
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, instruction))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for word in rest.split():
                port, _, proto = word.partition("/")
                proto = (proto or "tcp").lower()
                if proto not in ("tcp", "udp", "sctp"):
                    raise ImageError(f"EXPOSE {word}: invalid protocol {proto!r}")
                lo, _, hi = port.partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()):
                    raise ImageError(f"EXPOSE {word}: invalid port")
                for p in range(int(lo), int(hi or lo) + 1):
                    if not 0 < p < 65536:
                        raise ImageError(f"EXPOSE {word}: port {p} out of range")
                    ports[f"{p}/{proto}"] = {}
            if not ports:
                raise ImageError("EXPOSE requires at least one argument")
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            text = rest.strip()
            paths: list[str] = []
            if text.startswith("["):
                with contextlib.suppress(ValueError):
                    value = json.loads(text)
                    if isinstance(value, list) and all(isinstance(v, str) for v in value):
                        paths = value
            if not paths:
                paths = text.split()
            if not paths:
                raise ImageError("VOLUME requires at least one argument")
            volumes = dict(config.get("Volumes") or {})
            volumes.update({p: {} for p in paths})
            config["Volumes"] = volumes
        elif instruction == "WORKDIR":
            path = rest.strip()
            if not path:
                raise ImageError("WORKDIR requires exactly one argument")
            config["WorkingDir"] = posixpath.normpath(
                posixpath.join(config.get("WorkingDir") or "/", path)
            )
        elif instruction == "USER":
            if not rest.strip():
                raise ImageError("USER requires exactly one argument")
            config["User"] = rest.strip()
        elif instruction == "STOPSIGNAL":
            if not rest.strip():
                raise ImageError("STOPSIGNAL requires exactly one argument")
            config["StopSignal"] = rest.strip()
        elif instruction == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), rest.strip()]
    return config


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(
    store: ImageStore,
    source: PathOrFile,
    changes: Sequence[str] = (),
    ref: str | None = None,
    *,
    message: str = "",
    platform: dict[str, str] | None = None,
) -> Image:
    """``docker import``: a filesystem tar (plain, gzip, zstd, xz or bzip2) as a one-layer image.

    The tar is stored as the layer (gzip and zstd as they are; xz and bzip2,
    which image layers cannot be, decompressed); the config gets this
    host's platform (or ``platform``), ``changes`` (:func:`apply_changes`)
    and a history entry with ``message``. Tagged ``ref`` when given.
    """
    config_obj = apply_changes({}, changes)
    name = normalize_reference(ref) if ref is not None else None
    if name is not None and "@" in name:
        raise InvalidReference(f"cannot import as a digest reference: {ref}", ref)
    described = os.fspath(source) if isinstance(source, str | os.PathLike) else "-"
    lease = getattr(store.content, "lease", None)
    with lease() if lease is not None else contextlib.nullcontext():
        with (
            open(source, "rb")
            if isinstance(source, str | os.PathLike)
            else contextlib.nullcontext(source)
        ) as raw:
            kind, stream = peeked(raw)
            if kind in ("xz", "bzip2"):
                stream = decompressed(stream)
                kind = None
            digest = str(store.content.ingest_from(stream))
        with store.content.open(digest) as blob:
            diff_id, _ = _diff_id(blob, check_tar=True, what=described)
        media_type = {
            None: MEDIA_TYPE_OCI_LAYER,
            "gzip": MEDIA_TYPE_OCI_LAYER_GZIP,
            "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD,
        }[kind]
        plat = platform or host_platform()
        created = _now()
        config = canonical_json(
            {
                "created": created,
                "architecture": plat["architecture"],
                **({"variant": plat["variant"]} if plat.get("variant") else {}),
                "os": plat.get("os", "linux"),
                "config": config_obj,
                **({"comment": message} if message else {}),
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [
                    {
                        "created": created,
                        "created_by": "bulkhead import",
                        "comment": message or f"Imported from {described}",
                    }
                ],
            }
        )
        config_digest = store.content.write_blob(config)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_TYPE_OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": media_type,
                        "digest": digest,
                        "size": store.content.info(digest).size,
                    }
                ],
            }
        )
        image = store.add(store.content.write_blob(manifest))
        if name is not None:
            store.tag(image, name)
            image = store.get(image.id)
        return image


# --- export --------------------------------------------------------------------


def export_filesystem(source: str | os.PathLike[str] | Sequence[Any], out: PathOrFile) -> int:
    """``docker export``: a filesystem as one plain tar; returns the number of entries.

    ``source`` is a directory, or a snapshotter's mounts (a list of
    :class:`bulkhead.snapshots.Mount`, e.g. ``snapshotter.mounts(key)``)
    which are mounted read-only on a temporary directory for the time of the
    export. Owners are numeric, hard links kept as links, xattrs as
    ``SCHILY.xattr`` records; sockets are left out.
    """
    if isinstance(source, str | os.PathLike):
        return _export_dir(os.fspath(source), out)
    from bulkhead.snapshots.mount import mount_all, unmount_all

    with tempfile.TemporaryDirectory(prefix="bulkhead-export-") as target:
        mount_all(list(cast(Sequence[Any], source)), target)
        try:
            return _export_dir(target, out)
        finally:
            unmount_all(target)


def _export_dir(root: str, out: PathOrFile) -> int:
    count = 0
    with _output(out) as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        stack = [""]
        while stack:
            rel = stack.pop()
            directory = os.path.join(root, rel)
            subdirs: list[str] = []
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                arc = f"{rel}/{name}" if rel else name
                st = os.lstat(path)
                if stat.S_ISSOCK(st.st_mode):
                    continue
                info = tar.gettarinfo(path, arcname=arc)
                info.uname = info.gname = ""
                xattrs = _xattrs(path)
                if xattrs:
                    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
                if info.isreg():
                    with open(path, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
                count += 1
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(arc)
            stack.extend(reversed(subdirs))
    return count


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False).decode(
                "utf-8", "surrogateescape"
            )
    return out
