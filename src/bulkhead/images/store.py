"""The image store: which images exist, their names, and who uses them.

Vocabulary (Docker's and containerd's):

*blob*
    bytes in the content store (:mod:`bulkhead.images.content`), addressed by
    digest: layers, image configs, manifests, indexes.
*image*
    an image config plus the layers it lists. Its **id** is the digest of
    its config (``sha256:...``; ``docker images`` shows the first 12 hex
    digits). The manifest that named the config and layers is kept with it:
    it is how the blobs are found again and what garbage collection starts
    from.
*tag*
    a name for an image (``docker.io/library/busybox:latest``), always
    normalised as Docker does: ``busybox`` means
    ``docker.io/library/busybox:latest``. A name points to one image; an image
    may have many names. An image with no name is *dangling*.
*repo digest*
    ``name@sha256:...``: the image as a registry knew it, by the digest of the
    manifest (or index) it was pulled by.
*diff_id* / *chain id*
    the digest of a layer's *uncompressed* tar, as listed in the config's
    ``rootfs.diff_ids``; a chain id names a layer *with all the layers below
    it* (``chain[0] = diff_id[0]``, ``chain[n] = sha256(chain[n-1] + " " +
    diff_id[n])``). Snapshots of unpacked layers are committed under their
    chain id, so images sharing a base share its snapshots.
*use*
    a container (or anything else) that registered it needs an image; an
    image in use is not removed unless forced.

Metadata lives in SQLite (``<root>/images.db``, WAL, one transaction per
change); blobs in a :class:`ContentStore` at ``<root>/content``. Removal
deletes metadata first, then collects blobs no remaining image reaches (mark
and sweep from every image's manifest). The engine's default root is
``/var/lib/bulkhead/images``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkhead.errors import (
    BlobNotFound,
    DigestMismatch,
    ImageError,
    ImageInUse,
    ImageNotFound,
    ManifestError,
    SnapshotError,
    UnsupportedMediaType,
)
from bulkhead.images.content import ContentStore
from bulkhead.images.layer import Whiteouts, apply_layer
from bulkhead.images.reference import parse_reference
from bulkhead.oci.image_spec import (
    CONFIG_MEDIA_TYPES,
    MEDIA_TYPE_OCI_MANIFEST,
    Index,
    Platform,
    chain_ids,
    is_layer_media_type,
    parse_manifest,
    parse_platform,
    select_manifest,
)
from bulkhead.snapshots.mount import mount_all, unmount_all

DEFAULT_ROOT = "/var/lib/bulkhead/images"
#: The label :meth:`ImageStore.unpack` puts on the snapshots it commits (value: the diff_id).
UNPACKED_LABEL = "bulkhead.images.unpacked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,              -- config digest
    manifest TEXT NOT NULL,           -- manifest digest
    target TEXT NOT NULL,             -- what was added: the manifest, or the index naming it
    created TEXT NOT NULL,            -- the config's "created"
    size INTEGER NOT NULL,            -- config + layers, as stored
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,            -- normalised reference with a tag
    image TEXT NOT NULL REFERENCES images(id),
    tagged REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_digests (
    name TEXT PRIMARY KEY,            -- repository@digest
    image TEXT NOT NULL REFERENCES images(id)
);
CREATE TABLE IF NOT EXISTS uses (
    image TEXT NOT NULL REFERENCES images(id),
    user TEXT NOT NULL,               -- e.g. a container id
    PRIMARY KEY (image, user)
);
"""


# --- helpers ---------------------------------------------------------------------


def normalize_reference(text: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest`` (Docker's normalisation).

    A reference with a digest becomes ``repository@digest`` (a tag next to a
    digest is ignored, as Docker does).
    """
    ref = parse_reference(text)
    if ref.digest:
        return f"{ref.repository}@{ref.digest}"
    return str(ref)


def familiar(name: str) -> str:
    """``docker.io/library/busybox:latest`` → ``busybox:latest`` (how Docker shows names)."""
    return parse_reference(name).familiar()


def open_content_store(root: str | os.PathLike[str]) -> ContentStore:
    """The content store at ``root``."""
    return ContentStore(root)


# --- manifests -----------------------------------------------------------------


def read_verified(content: ContentStore, digest: str) -> bytes:
    """A blob from the content store, its digest checked (for manifests and configs)."""
    return content.read(digest, verify=True)


def read_json(content: ContentStore, digest: str) -> dict[str, Any]:
    """A JSON document from the content store, its digest checked."""
    data = read_verified(content, digest)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"{digest} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{digest} is not a JSON object")
    return doc


def document_kind(data: bytes, media_type: str | None = None) -> str:
    """``"index"`` or ``"manifest"``: schema1, unknown media types and malformed documents refused."""
    return "index" if isinstance(parse_manifest(data, media_type), Index) else "manifest"


def as_platform(platform: Platform | str | dict[str, str] | None) -> Platform | None:
    """A platform given as ``"linux/arm64/v8"``, a dict or a :class:`Platform`."""
    if platform is None or isinstance(platform, Platform):
        return platform
    if isinstance(platform, str):
        return parse_platform(platform)
    return Platform(
        architecture=platform["architecture"],
        os=platform.get("os", "linux"),
        variant=platform.get("variant"),
    )


def select_platform(data: bytes, platform: Platform | str | dict[str, str] | None = None) -> str:
    """The digest of the manifest of an index matching ``platform`` (this host's by default)."""
    index = parse_manifest(data)
    assert isinstance(index, Index)
    return select_manifest(index, as_platform(platform)).digest


# --- the store ---------------------------------------------------------------


@dataclass
class Image:
    """One image: its id (config digest), manifest, config and names."""

    id: str
    manifest_digest: str
    target: str
    created: str
    size: int
    config: dict[str, Any] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers") or [])


class ImageStore:
    """Images over a root directory: blobs in a content store, names in SQLite.

    ``content`` may be given (a :class:`bulkhead.images.content.ContentStore`
    shared with a registry client); by default one is opened at
    ``<root>/content``.
    """

    def __init__(
        self, root: str | os.PathLike[str] = DEFAULT_ROOT, content: ContentStore | None = None
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.content = content if content is not None else open_content_store(self.root / "content")
        self._db = sqlite3.connect(
            self.root / "images.db", isolation_level=None, timeout=30, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: crash-safe without an fsync per commit
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (other processes wait for it; threads of this one too)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- adding -------------------------------------------------------------

    def resolve_manifest(
        self, digest: str, platform: Platform | str | dict[str, str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The manifest ``digest`` names: itself, or the platform's entry of an index."""
        data = read_verified(self.content, digest)
        seen = 0
        while document_kind(data) == "index":
            seen += 1
            if seen > 4:
                raise ManifestError(f"{digest}: indexes nested too deeply")
            digest = select_platform(data, platform)
            data = read_verified(self.content, digest)
        return digest, read_json(self.content, digest)

    def check_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Check a manifest's blobs are present and agree with it; return the config."""
        config_desc = manifest.get("config") or {}
        if not isinstance(config_desc.get("digest"), str):
            raise ManifestError("manifest has no config descriptor")
        cmt = config_desc.get("mediaType")
        if cmt is not None and cmt not in CONFIG_MEDIA_TYPES:
            raise UnsupportedMediaType(f"unsupported image config media type {cmt!r}", cmt)
        for layer in manifest.get("layers") or []:
            lmt = layer.get("mediaType")
            if not isinstance(lmt, str) or not is_layer_media_type(lmt):
                raise UnsupportedMediaType(f"unsupported layer media type {lmt!r}", lmt)
            if not self.content.exists(layer["digest"]):
                raise BlobNotFound(
                    f"layer {layer['digest']} is not in the content store", layer["digest"]
                )
        config = read_json(self.content, config_desc["digest"])
        if len(config_bytes := self.content.read(config_desc["digest"])) != config_desc.get(
            "size", len(config_bytes)
        ):
            raise ManifestError(
                f"config {config_desc['digest']} is {len(config_bytes)} bytes, "
                f"the manifest says {config_desc.get('size')}"
            )
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = manifest.get("layers") or []
        if len(diff_ids) != len(layers):
            raise ManifestError(
                f"image config lists {len(diff_ids)} diff_ids for {len(layers)} layers"
            )
        return config

    def add(
        self,
        manifest_digest: str,
        *,
        platform: Platform | str | dict[str, str] | None = None,
        repo_digest: str | None = None,
        index_digest: str | None = None,
    ) -> Image:
        """Record the image a manifest (or an index, for ``platform``) describes.

        Every blob must already be in the content store. Adding an image
        again is harmless. ``repo_digest`` (``name@sha256:...``) records how a
        registry named it; ``index_digest`` is the index a manifest was chosen
        from (kept, and findable as ``name@<index digest>``).
        """
        manifest_d, manifest = self.resolve_manifest(manifest_digest, platform)
        config = self.check_manifest(manifest)
        image_id = str(manifest["config"]["digest"])
        size = int(manifest["config"].get("size", 0)) + sum(
            int(layer.get("size", 0)) for layer in manifest.get("layers") or []
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO images (id, manifest, target, created, size, added) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "manifest=excluded.manifest, target=excluded.target",
                (
                    image_id,
                    manifest_d,
                    index_digest or manifest_digest,
                    str(config.get("created") or ""),
                    size,
                    time.time(),
                ),
            )
            if repo_digest is not None:
                db.execute(
                    "INSERT OR REPLACE INTO repo_digests (name, image) VALUES (?, ?)",
                    (repo_digest, image_id),
                )
        return self._load(image_id)

    def record_pull(self, pulled: Any) -> Image:
        """Record what :meth:`RegistryClient.pull <bulkhead.images.registry.RegistryClient.pull>` stored.

        The image gets the pulled reference's tag (when it has one) and the
        repo digest ``repository@<digest the reference resolved to>``.
        """
        ref = pulled.reference
        image = self.add(
            pulled.manifest_digest,
            repo_digest=f"{ref.repository}@{pulled.digest}",
            index_digest=pulled.digest,
        )
        if ref.tag and not ref.digest:
            self.tag(image, str(ref))
        return self.get(image.id)

    def pull(
        self,
        client: Any,
        ref: str,
        platform: Platform | str | None = None,
        progress: Any = None,
    ) -> Image:
        """``docker pull``: fetch ``ref`` with a registry client and record it, under a lease.

        The lease keeps a concurrent garbage collection from sweeping the
        new blobs before the image that refers to them is recorded.
        """
        with self.content.lease():
            pulled = client.pull(ref, self.content, platform=platform, progress=progress)
            return self.record_pull(pulled)

    # -- names ------------------------------------------------------------------

    def tag(self, image: Image | str, ref: str) -> str:
        """Point the name ``ref`` at ``image`` (moving it from any other image); return the name."""
        image_id = self.get(image).id if isinstance(image, str) else image.id
        name = normalize_reference(ref)
        if "@" in name:
            raise ImageError(f"cannot tag with a digest reference: {ref}")
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO tags (name, image, tagged) VALUES (?, ?, ?)",
                (name, image_id, time.time()),
            )
        return name

    def untag(self, ref: str) -> str:
        """Remove the name ``ref``; return the id of the image it named."""
        name = normalize_reference(ref)
        with self._tx() as db:
            row = db.execute("SELECT image FROM tags WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ImageNotFound(f"No such image: {ref}")
            db.execute("DELETE FROM tags WHERE name = ?", (name,))
        return str(row[0])

    def add_repo_digest(self, image: Image | str, name: str) -> None:
        """Record ``repository@digest`` as a name of ``image`` (after a push, as Docker does)."""
        image_id = self.get(image).id if isinstance(image, str) else image.id
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO repo_digests (name, image) VALUES (?, ?)", (name, image_id)
            )

    # -- lookup --------------------------------------------------------------------

    def _load(self, image_id: str) -> Image:
        with self._lock:
            return self._load_locked(image_id)

    def _load_locked(self, image_id: str) -> Image:
        row = self._db.execute(
            "SELECT id, manifest, target, created, size FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if row is None:
            raise ImageNotFound(f"No such image: {image_id}")
        manifest = read_json(self.content, row[1])
        config = read_json(self.content, manifest["config"]["digest"])
        tags = [
            r[0]
            for r in self._db.execute(
                "SELECT name FROM tags WHERE image = ? ORDER BY tagged, name", (image_id,)
            )
        ]
        digests = [
            r[0]
            for r in self._db.execute(
                "SELECT name FROM repo_digests WHERE image = ? ORDER BY name", (image_id,)
            )
        ]
        return Image(
            id=row[0],
            manifest_digest=row[1],
            target=row[2],
            created=row[3],
            size=row[4],
            config=config,
            manifest=manifest,
            tags=tags,
            repo_digests=digests,
        )

    def _resolve_id(self, ref: str) -> str:
        # 1. a full id (with or without "sha256:")
        candidate = ref if ref.startswith("sha256:") else f"sha256:{ref}"
        if len(candidate) == 71:
            row = self._db.execute("SELECT id FROM images WHERE id = ?", (candidate,)).fetchone()
            if row is not None:
                return str(row[0])
        # 2. a name (tag or repo digest)
        try:
            name = normalize_reference(ref)
        except ImageError:
            name = None
        if name is not None:
            table = "repo_digests" if "@" in name else "tags"
            row = self._db.execute(f"SELECT image FROM {table} WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return str(row[0])
            if "@" in name:  # by manifest digest of a known image, under any name
                digest = name.split("@", 1)[1]
                row = self._db.execute(
                    "SELECT id FROM images WHERE manifest = ? OR target = ?", (digest, digest)
                ).fetchone()
                if row is not None:
                    return str(row[0])
        # 3. a short id prefix
        hexpart = ref.removeprefix("sha256:")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart):
            rows = self._db.execute(
                "SELECT id FROM images WHERE id LIKE ?", (f"sha256:{hexpart}%",)
            ).fetchall()
            if len(rows) == 1:
                return str(rows[0][0])
            if len(rows) > 1:
                raise ImageError(f"{ref}: ambiguous image id prefix ({len(rows)} images)")
        raise ImageNotFound(f"No such image: {ref}")

    def get(self, ref: str) -> Image:
        """An image by name, repo digest, id or unique id prefix (Docker's order)."""
        with self._lock:
            return self._load(self._resolve_id(ref))

    def list(self, *, dangling: bool | None = None) -> builtins.list[Image]:
        """Every image, newest first; ``dangling`` filters on having no name."""
        ids = [r[0] for r in self._db.execute("SELECT id FROM images ORDER BY created DESC, id")]
        images = [self._load(i) for i in ids]
        if dangling is not None:
            images = [i for i in images if (not i.tags) == dangling]
        return images

    # -- use ------------------------------------------------------------------------

    def register_use(self, image: Image | str, user: str) -> None:
        """Record that ``user`` (a container id) needs ``image``."""
        image_id = self.get(image).id if isinstance(image, str) else image.id
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO uses (image, user) VALUES (?, ?)", (image_id, user))

    def unregister_use(self, image: Image | str, user: str) -> None:
        image_id = image if isinstance(image, str) and image.startswith("sha256:") else None
        if image_id is None:
            image_id = self.get(image).id if isinstance(image, str) else image.id
        with self._tx() as db:
            db.execute("DELETE FROM uses WHERE image = ? AND user = ?", (image_id, user))

    def users(self, image: Image | str) -> builtins.list[str]:
        image_id = self.get(image).id if isinstance(image, str) else image.id
        return [
            r[0]
            for r in self._db.execute(
                "SELECT user FROM uses WHERE image = ? ORDER BY user", (image_id,)
            )
        ]

    # -- Docker's views -------------------------------------------------------------------

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image as Docker's ``GET /images/{name}/json`` shows it (ImageInspect)."""
        image = self.get(ref)
        cfg = image.config.get("config") or {}
        config = {
            "Hostname": "",
            "Domainname": "",
            "User": cfg.get("User", ""),
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "ExposedPorts": cfg.get("ExposedPorts"),
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": cfg.get("Env"),
            "Cmd": cfg.get("Cmd"),
            "Healthcheck": cfg.get("Healthcheck"),
            "ArgsEscaped": cfg.get("ArgsEscaped"),
            "Image": "",
            "Volumes": cfg.get("Volumes"),
            "WorkingDir": cfg.get("WorkingDir", ""),
            "Entrypoint": cfg.get("Entrypoint"),
            "OnBuild": cfg.get("OnBuild"),
            "Labels": cfg.get("Labels"),
            "StopSignal": cfg.get("StopSignal"),
            "Shell": cfg.get("Shell"),
        }
        config = {k: v for k, v in config.items() if v is not None}
        last_tag = self._db.execute(
            "SELECT MAX(tagged) FROM tags WHERE image = ?", (image.id,)
        ).fetchone()[0]
        repo_digests = list(image.repo_digests)
        return {
            "Id": image.id,
            "RepoTags": [familiar(t) for t in image.tags],
            "RepoDigests": [familiar(d) for d in repo_digests],
            "Parent": "",
            # Docker keeps `docker import -m`/`commit -m` messages in the config's "comment".
            "Comment": str(image.config.get("comment") or ""),
            "Created": image.created or None,
            "DockerVersion": image.config.get("docker_version", ""),
            "Author": image.config.get("author", ""),
            "Config": config,
            "Architecture": image.config.get("architecture", ""),
            **({"Variant": image.config["variant"]} if image.config.get("variant") else {}),
            "Os": image.config.get("os", ""),
            **({"OsVersion": image.config["os.version"]} if image.config.get("os.version") else {}),
            "Size": image.size,
            "GraphDriver": {"Name": "", "Data": None},
            "RootFS": {"Type": "layers", "Layers": image.diff_ids},
            "Metadata": {
                "LastTagTime": (
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_tag)) if last_tag else None
                )
            },
            "Descriptor": {
                "mediaType": image.manifest.get("mediaType", MEDIA_TYPE_OCI_MANIFEST),
                "digest": image.manifest_digest,
                "size": len(self.content.read(image.manifest_digest)),
            },
        }

    def summaries(self) -> builtins.list[dict[str, Any]]:
        """Docker's ``GET /images/json`` (ImageSummary): one entry per image, newest first.

        ``Containers`` counts the registered uses; ``SharedSize`` is -1, as
        Docker reports it unless asked to compute it.
        """
        out: builtins.list[dict[str, Any]] = []
        for image in self.list():
            out.append(
                {
                    "Id": image.id,
                    "ParentId": "",
                    "RepoTags": [familiar(t) for t in image.tags],
                    "RepoDigests": [familiar(d) for d in image.repo_digests],
                    "Created": _unix(image.created),
                    "Size": image.size,
                    "SharedSize": -1,
                    "Labels": (image.config.get("config") or {}).get("Labels") or {},
                    "Containers": len(self.users(image)),
                    "Descriptor": {
                        "mediaType": image.manifest.get("mediaType", MEDIA_TYPE_OCI_MANIFEST),
                        "digest": image.manifest_digest,
                        "size": self.content.info(image.manifest_digest).size,
                    },
                }
            )
        return out

    def history(self, ref: str) -> builtins.list[dict[str, Any]]:
        """Docker's ``GET /images/{name}/history``: one entry per history step, newest first."""
        image = self.get(ref)
        layers = image.layers
        entries: builtins.list[dict[str, Any]] = []
        layer_i = 0
        for h in image.config.get("history") or []:
            size = 0
            if not h.get("empty_layer"):
                if layer_i < len(layers):
                    size = int(layers[layer_i].get("size", 0))
                layer_i += 1
            entries.append(
                {
                    "Id": "<missing>",
                    "Created": _unix(h.get("created")),
                    "CreatedBy": h.get("created_by", ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": h.get("comment", ""),
                }
            )
        entries.reverse()
        if entries:
            entries[0]["Id"] = image.id
            entries[0]["Tags"] = [familiar(t) for t in image.tags]
        return entries

    # -- removal --------------------------------------------------------------

    def remove(
        self, ref: str, force: bool = False, *, snapshotter: Any = None
    ) -> builtins.list[dict[str, str]]:
        """``docker rmi``: untag, and delete the image when no name is left.

        By a name (a tag, or a ``repo@digest`` the image was pulled or pushed
        as) with other names on the image: only that name goes. By
        its last name or by id: the image goes, unless containers use it
        (:class:`ImageInUse` names them) or, by id, it has several names;
        ``force`` overrides both. Returns Docker's list of
        ``{"Untagged": name}`` / ``{"Deleted": id}``. Blobs no remaining image
        reaches are then garbage-collected, and with ``snapshotter`` the
        unpacked layers no remaining image needs (:meth:`gc_snapshots`).

        The checks and the deletion are one transaction: a container that
        registers its use concurrently either wins (and the removal is
        refused) or finds the image gone.
        """
        out: builtins.list[dict[str, str]] = []
        with self._tx() as db:
            image_id = self._resolve_id(ref)
            tags = [r[0] for r in db.execute("SELECT name FROM tags WHERE image = ?", (image_id,))]
            short = image_id.split(":", 1)[1][:12]
            name = None
            with contextlib.suppress(ImageError):
                name = normalize_reference(ref)
            by_name = name is not None and name in tags
            if by_name and name is not None and len(tags) > 1:
                db.execute("DELETE FROM tags WHERE name = ?", (name,))
                return [{"Untagged": familiar(name)}]
            digests = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM repo_digests WHERE image = ? ORDER BY name", (image_id,)
                )
            ]
            if name is not None and name in digests and len(tags) + len(digests) > 1:
                # ``rmi repo@sha256:...`` of an image with other names: only that name goes.
                db.execute("DELETE FROM repo_digests WHERE name = ?", (name,))
                return [{"Untagged": familiar(name)}]
            by_name = by_name or (name is not None and name in digests)
            users = [
                r[0]
                for r in db.execute(
                    "SELECT user FROM uses WHERE image = ? ORDER BY user", (image_id,)
                )
            ]
            if users and not force:
                raise ImageInUse(
                    f"conflict: unable to remove repository reference {ref!r} (must force) - "
                    f"image {short} is being used by {', '.join(users)}"
                    if by_name
                    else f"conflict: unable to delete {short} (must be forced) - "
                    f"image is being used by {', '.join(users)}"
                )
            if not by_name and len(tags) > 1 and not force:
                raise ImageInUse(
                    f"conflict: unable to delete {short} (must be forced) - "
                    "image is referenced in multiple repositories"
                )
            out.extend({"Untagged": familiar(t)} for t in tags)
            out.extend({"Untagged": familiar(d)} for d in digests)
            self._delete(db, image_id)
        out.append({"Deleted": image_id})
        self.gc()
        if snapshotter is not None:
            self.gc_snapshots(snapshotter)
        return out

    @staticmethod
    def _delete(db: sqlite3.Connection, image_id: str) -> None:
        for table in ("tags", "repo_digests", "uses"):
            db.execute(f"DELETE FROM {table} WHERE image = ?", (image_id,))
        db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def prune(
        self,
        dangling_only: bool = True,
        *,
        snapshotter: Any = None,
        keep: Callable[[Image], bool] | None = None,
    ) -> dict[str, Any]:
        """Remove images nothing uses: the dangling ones, or (``dangling_only=False``) all.

        ``keep(image)`` spares an image a filter does not select (``label``,
        ``until``). Returns Docker's ``{"ImagesDeleted": [...], "SpaceReclaimed": bytes}``,
        the bytes being what really left the disk (:meth:`collect`): blobs, and
        with ``snapshotter`` the unpacked layers no remaining image needs.
        """
        deleted: builtins.list[dict[str, str]] = []
        with self._tx() as db:
            for (image_id,) in db.execute("SELECT id FROM images ORDER BY id").fetchall():
                if db.execute("SELECT 1 FROM uses WHERE image = ?", (image_id,)).fetchone():
                    continue
                tags = [
                    r[0] for r in db.execute("SELECT name FROM tags WHERE image = ?", (image_id,))
                ]
                if dangling_only and tags:
                    continue
                if keep is not None:
                    try:
                        if keep(self._load(image_id)):
                            continue
                    except ImageError:
                        pass  # its manifest or config is unreadable: nothing to keep it for
                deleted.extend({"Untagged": familiar(t)} for t in tags)
                self._delete(db, image_id)
                deleted.append({"Deleted": image_id})
        reclaimed = self.collect(snapshotter)
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def collect(self, snapshotter: Any = None) -> int:
        """Garbage-collect blobs (:meth:`gc`) and unpacked layers (:meth:`gc_snapshots`).

        Returns the bytes freed: the sizes of the blobs deleted plus the disk
        usage the snapshotter recorded for each unpacked layer removed.
        """
        sizes = {info.digest: info.size for info in self.content.walk()}
        freed = sum(sizes.get(digest, 0) for digest in self.gc())
        if snapshotter is not None:
            freed += sum(self._gc_snapshots(snapshotter).values())
        return freed

    def gc_snapshots(self, snapshotter: Any) -> builtins.list[str]:
        """Remove unpacked layer snapshots no image needs; return their names.

        Only committed snapshots this store made (labelled
        :data:`UNPACKED_LABEL` by :meth:`unpack`), whose chain id no image
        has, and that no other snapshot (a container's, another layer) is
        built on, are removed; repeated until nothing more goes, so a chain
        is taken down from its top.
        """
        return list(self._gc_snapshots(snapshotter))

    def _gc_snapshots(self, snapshotter: Any) -> dict[str, int]:
        """:meth:`gc_snapshots`, returning each removed snapshot's recorded disk usage."""
        with self._lock:
            wanted: set[str] = set()
            for (image_id,) in self._db.execute("SELECT id FROM images").fetchall():
                with contextlib.suppress(ImageError):
                    wanted.update(self._load(image_id).chain_ids)
        removed: dict[str, int] = {}
        while True:
            infos = list(snapshotter.walk())
            parents = {i.parent for i in infos if i.parent}
            victims = [
                i.name
                for i in infos
                if str(i.kind) == "committed"
                and UNPACKED_LABEL in (i.labels or {})
                and i.name not in wanted
                and i.name not in parents
            ]
            gone = 0
            for victim in victims:
                size = 0
                with contextlib.suppress(Exception):
                    size = int(snapshotter.usage(victim).size)
                try:
                    snapshotter.remove(victim)
                except SnapshotError:
                    continue  # someone built on it meanwhile
                removed[victim] = size
                gone += 1
            if not gone:
                return removed

    def disk_usage(self, snapshotter: Any = None) -> dict[str, Any]:
        """What ``GET /system/df`` says of images: ``LayersSize`` and one summary per image.

        Sizes are bytes on disk: an image's ``Size`` counts its blobs
        (manifest, config, layers as stored) and its unpacked layer
        snapshots; ``SharedSize`` the part of that other images reference
        too; ``Containers`` the containers using it. ``LayersSize`` is every
        blob plus every unpacked layer, each counted once.
        """
        blob_sizes = {info.digest: info.size for info in self.content.walk()}
        snap_sizes: dict[str, int] = {}
        if snapshotter is not None:
            for info in snapshotter.walk():
                if str(info.kind) == "committed" and UNPACKED_LABEL in (info.labels or {}):
                    with contextlib.suppress(Exception):
                        snap_sizes[info.name] = int(snapshotter.usage(info.name).size)
        summaries = self.summaries()
        units: dict[str, set[tuple[str, str]]] = {}
        for summary in summaries:
            mine: set[tuple[str, str]] = set()
            with contextlib.suppress(ImageError):
                image = self._load(summary["Id"])
                mine.update(("blob", d) for d in (image.manifest_digest, image.target, image.id))
                mine.update(("blob", layer.get("digest", "")) for layer in image.layers)
                mine.update(("snapshot", c) for c in image.chain_ids)
            units[summary["Id"]] = mine
        counts: dict[tuple[str, str], int] = {}
        for mine in units.values():
            for unit in mine:
                counts[unit] = counts.get(unit, 0) + 1

        def size_of(unit: tuple[str, str]) -> int:
            kind, name = unit
            return (blob_sizes if kind == "blob" else snap_sizes).get(name, 0)

        for summary in summaries:
            mine = units[summary["Id"]]
            summary["Size"] = sum(size_of(u) for u in mine)
            summary["SharedSize"] = sum(size_of(u) for u in mine if counts[u] > 1)
        return {
            "LayersSize": sum(blob_sizes.values()) + sum(snap_sizes.values()),
            "Images": summaries,
        }

    def roots(self) -> builtins.list[str]:
        """What garbage collection starts from: every image's manifest and index."""
        out: set[str] = set()
        for manifest, target in self._db.execute("SELECT manifest, target FROM images"):
            out.add(manifest)
            out.add(target)
        return sorted(out)

    def gc(self) -> builtins.list[str]:
        """Delete blobs no image reaches; return their digests."""
        return list(self.content.gc(self.roots(), blob_children))

    # -- unpacking ------------------------------------------------------------

    def unpack(self, image: Image | str, snapshotter: Any) -> str:
        """Unpack ``image``'s layers as committed snapshots; return the top chain id.

        For each layer in order: when a committed snapshot named by its chain
        id exists it is reused; otherwise an active snapshot is prepared on
        the previous one, mounted, the layer applied (whiteouts in the
        snapshotter's form), its diff_id checked against the config,
        unmounted and committed under the chain id. A container's root is then
        ``snapshotter.prepare(container_key, parent=<returned chain id>)``.
        """
        img = self.get(image) if isinstance(image, str) else image
        layers = img.layers
        diff_ids = img.diff_ids
        chains = chain_ids(diff_ids)
        parent: str | None = None
        for layer, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
            if _committed(snapshotter, chain):
                parent = chain
                continue
            key = f"extract-{uuid.uuid4().hex[:12]} {chain}"
            mounts = snapshotter.prepare(key, parent=parent)
            try:
                direct, whiteouts = apply_target(mounts)
                with self.content.open(layer["digest"]) as blob:
                    if direct is not None:
                        applied = apply_layer(
                            blob, direct, whiteouts=whiteouts, media_type=layer.get("mediaType")
                        )
                    else:
                        with tempfile.TemporaryDirectory(prefix="bulkhead-unpack-") as target:
                            mount_all(mounts, target)
                            try:
                                applied = apply_layer(
                                    blob,
                                    target,
                                    whiteouts="delete",
                                    media_type=layer.get("mediaType"),
                                )
                            finally:
                                unmount_all(target)
                if applied.diff_id != diff_id:
                    raise DigestMismatch(
                        f"layer {layer['digest']} unpacks to {applied.diff_id}, "
                        f"the image config says {diff_id}",
                        expected=diff_id,
                        actual=applied.diff_id,
                    )
                try:
                    snapshotter.commit(chain, key, labels={UNPACKED_LABEL: diff_id})
                except Exception:
                    if not _committed(snapshotter, chain):  # not lost to a concurrent unpack
                        raise
                    snapshotter.remove(key)
            except BaseException:
                with contextlib.suppress(Exception):
                    snapshotter.remove(key)
                raise
            parent = chain
        if parent is None:
            raise ImageError(f"image {img.short_id} has no layers")
        return parent


def _committed(snapshotter: Any, name: str) -> bool:
    try:
        info = snapshotter.stat(name)
    except Exception:
        return False
    kind = getattr(info, "kind", None)
    return str(getattr(kind, "value", kind)).lower() == "committed"


def apply_target(mounts: builtins.list[Any]) -> tuple[str | None, Whiteouts]:
    """Where a layer can be applied without mounting, and in which whiteout form.

    A single bind mount (vfs, or the first layer of overlay) is applied to
    its source directory with whiteouts as deletions; a single overlay
    mount to its ``upperdir`` with overlay-form whiteouts (what overlayfs
    reads; containerd does the same). Anything else is mounted first and
    applied through the mount with deletions (``(None, "delete")``).
    """
    if len(mounts) == 1:
        m = mounts[0]
        if m.type == "bind" and not getattr(m, "target", ""):
            return m.source, "delete"
        if m.type == "overlay" and not getattr(m, "target", ""):
            for option in m.options:
                if option.startswith("upperdir="):
                    return option[len("upperdir=") :], "overlay"
    return None, "delete"


def blob_children(digest: str, data: bytes) -> list[str]:
    """What a blob links to, for garbage collection: an index its manifests, a manifest its config and layers."""
    if data[:1] != b"{" or len(data) > 4 << 20:
        return []
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    out: list[str] = []
    for desc in doc.get("manifests") or []:
        if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
            out.append(desc["digest"])
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        out.append(config["digest"])
    for desc in doc.get("layers") or []:
        if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
            out.append(desc["digest"])
    return out


def _unix(created: Any) -> int:
    if not isinstance(created, str) or not created:
        return 0
    import datetime

    text = created.replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python takes at most microseconds
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())
