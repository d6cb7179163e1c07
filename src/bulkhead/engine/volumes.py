"""Named volumes: the ``local`` volume driver and its reference counts.

Vocabulary
----------
*volume*
    A directory the daemon owns, outside any container's root filesystem,
    that containers mount (``-v NAME:/dst``, ``--mount type=volume``). It
    outlives the containers that use it. With the ``local`` driver its data
    lives in ``<root>/<name>/_data`` (the volume's *mountpoint*, as Docker
    calls it), ``<root>`` being ``<data root>/volumes``.
*named* / *anonymous*
    A volume the user named, or one the engine made for ``-v /dst``, for an
    image's ``VOLUME`` or for ``--mount type=volume`` without a source: its
    name is 64 random hex digits and it carries the label
    ``com.docker.volume.anonymous`` (Docker 23+), which is how ``volume
    prune`` (anonymous ones only, unless ``all=true``) and ``docker rm -v``
    / ``--rm`` (the container's anonymous volumes) tell them apart.
*reference*
    A container using the volume (``use(name, container_id)``), from its
    create to its removal. A referenced volume cannot be removed (409
    ``volume is in use``) and is not *dangling*. References are kept in the
    database, so they survive a daemon restart; the engine drops those of
    containers that no longer exist (:meth:`VolumeStore.reconcile`).
*driver options*
    The ``local`` driver's ``--opt`` keys, as Docker's: ``type`` (a
    filesystem type, e.g. ``tmpfs``, or ``none`` with ``o=bind``),
    ``device`` (what to mount: ``tmpfs``, a host directory for a bind, a
    block device), ``o`` (mount(8) options, e.g. ``size=64m,uid=1000`` or
    ``bind``). ``type`` and ``device`` go together, ``o`` needs both. A
    volume with options is mounted on its ``_data`` when its first
    reference is taken and unmounted when its last one is dropped (Docker
    mounts on container start; the lifetime here is create → remove).
    ``size`` (an XFS project quota in Docker) is refused: no quota support.

The store is one SQLite database (``volumes.db``: a ``volumes`` table and a
``refs`` table), safe to share between the daemon's threads. Every change
is one transaction; a volume's directory is made before its row is
committed and removed after its row is gone, so a crash leaves at worst an
empty directory with no row, which :meth:`VolumeStore.__init__` collects.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from bulkhead.errors import NoSuchVolume, SpecError, VolumeError, VolumeInUse
from bulkhead.statedb import open_state_db, transaction

log = logging.getLogger("bulkhead.volumes")

#: the label Docker 23+ puts on anonymous volumes (``volume prune`` keys on it)
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

#: where the local driver keeps a volume's data, under ``<root>/<name>/``
DATA_DIR = "_data"

DEFAULT_DRIVER = "local"

#: Docker's ``names.RestrictedNamePattern``: what a local volume may be called
RESTRICTED_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME_RE = re.compile(rf"^{RESTRICTED_NAME_CHARS}+$")

_LOCAL_OPTS = ("type", "o", "device", "size")
_MANDATORY_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}

_LIST_FILTERS = frozenset({"dangling", "driver", "label", "label!", "name"})
_PRUNE_FILTERS = frozenset({"label", "label!", "all"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name     TEXT PRIMARY KEY,
    driver   TEXT NOT NULL,
    created  TEXT NOT NULL,
    labels   TEXT NOT NULL DEFAULT '{}',
    options  TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS refs (
    volume     TEXT NOT NULL REFERENCES volumes(name),
    container  TEXT NOT NULL,
    PRIMARY KEY (volume, container)
);
CREATE INDEX IF NOT EXISTS refs_container ON refs(container);
"""


class Volume(msgspec.Struct, frozen=True, kw_only=True):
    """One volume as stored: ``mountpoint`` is the host path containers mount."""

    name: str
    driver: str
    mountpoint: str
    created_at: str  # RFC 3339, UTC, seconds (Docker's CreatedAt)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    options: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_docker(self) -> dict[str, Any]:
        """Docker's ``Volume`` object (``GET /volumes/{name}``)."""
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": dict(self.options) if self.options else None,
            "Scope": "local",
        }


def validate_name(name: str) -> None:
    """Docker's local-driver name rules, with its wording (:class:`SpecError`, 400)."""
    if len(name) == 1:
        raise SpecError(
            f"create {name}: volume name is too short, names should be at least two "
            "alphanumeric characters"
        )
    if not _NAME_RE.match(name):
        raise SpecError(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            f'only "{RESTRICTED_NAME_CHARS}" are allowed. If you intended to pass a host '
            "directory, use absolute path"
        )


def validate_options(options: Mapping[str, str]) -> None:
    """The local driver's ``--opt`` checks (Docker's ``validateOpts``)."""
    for key in options:
        if key not in _LOCAL_OPTS:
            raise SpecError(f'invalid option: "{key}"')
    if "size" in options:
        raise SpecError("quota size requested but no quota support")
    for key, needs in _MANDATORY_OPTS.items():
        if key in options:
            for need in needs:
                if need not in options:
                    raise SpecError(f'missing required option: "{need}"')


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_bool(key: str, value: str) -> bool:
    if value in ("1", "true", "True", "TRUE", "t", "T"):
        return True
    if value in ("0", "false", "False", "FALSE", "f", "F"):
        return False
    raise SpecError(f"invalid filter '{key}={value}'")


def _label_matches(labels: Mapping[str, str], want: str) -> bool:
    """``key`` (present) or ``key=value`` (present with that value)."""
    key, sep, value = want.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def _name_matches(name: str, pattern: str) -> bool:
    """Docker's filter ``Match``: the value as a regular expression searched in the name."""
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _tree_size(path: str) -> int:
    """Bytes used under ``path``: the sizes of everything but directories, hardlinks once."""
    import stat

    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _is_mountpoint(path: str) -> bool:
    from bulkhead.linux import mountinfo

    real = os.path.realpath(path)
    return any(m.mountpoint == real for m in mountinfo.read())


# aliases: VolumeStore.list shadows the builtin inside the class body
_Names = list[str]
_Volumes = list[Volume]
_Docs = list[dict[str, Any]]
_Filters = Mapping[str, list[str]]


class VolumeStore:
    """The daemon's volumes (``local`` driver) under ``root`` (``<data root>/volumes``).

    Methods are synchronous (SQLite, a few filesystem calls); the daemon
    calls them from its event loop or through ``asyncio.to_thread``. Errors:
    :class:`NoSuchVolume` (404), :class:`VolumeInUse` (409),
    :class:`SpecError` (400) for a bad name, driver or option.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o701)
        self._db = open_state_db(self.root / "volumes.db", _SCHEMA, foreign_keys=True)
        self._lock = threading.RLock()
        #: ``(action, volume name, attributes)`` for ``GET /events`` (``create``,
        #: ``destroy``); the daemon points it at the engine's event bus
        self.on_event: Callable[[str, str, dict[str, str]], object] | None = None
        self._collect_orphans()
        self._restore_mounts()

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def _collect_orphans(self) -> None:
        """Remove empty volume directories with no row (a crash between mkdir and commit).

        Only what :meth:`create` leaves in that window (``<name>/_data``, both
        empty) goes; a directory with anything else in it is left alone.
        """
        with self._lock:
            names = {r[0] for r in self._db.execute("SELECT name FROM volumes")}
        for entry in os.scandir(self.root):
            if not entry.is_dir(follow_symlinks=False) or entry.name in names:
                continue
            data = os.path.join(entry.path, DATA_DIR)
            with contextlib.suppress(OSError):
                if os.listdir(entry.path) in ([], [DATA_DIR]) and (
                    not os.path.isdir(data) or not os.listdir(data)
                ):
                    if os.path.isdir(data):
                        os.rmdir(data)
                    os.rmdir(entry.path)

    def _restore_mounts(self) -> None:
        """Mount again the volumes with driver options that containers hold (after a reboot).

        A failure (a device gone) is logged, not raised: the daemon must start;
        the container using the volume fails when it starts instead.
        """
        with self._lock:
            used = self._used_names()
            for vol in self.volumes():
                if vol.options and vol.name in used:
                    try:
                        self._mount(vol)
                    except (VolumeError, OSError) as exc:
                        log.warning("volume %s: %s", vol.name, exc)

    # -- paths and rows ---------------------------------------------------------------

    def mountpoint(self, name: str) -> str:
        """The host path of ``name``'s data (``<root>/<name>/_data``)."""
        return str(self.root / name / DATA_DIR)

    def _volume(self, row: tuple[str, str, str, str, str]) -> Volume:
        name, driver, created, labels, options = row
        return Volume(
            name=name,
            driver=driver,
            mountpoint=self.mountpoint(name),
            created_at=created,
            labels=json.loads(labels),
            options=json.loads(options),
        )

    def _row(self, db: sqlite3.Connection, name: str) -> Volume | None:
        row = db.execute(
            "SELECT name, driver, created, labels, options FROM volumes WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else self._volume(row)

    # -- create, get, list --------------------------------------------------------------

    def create(
        self,
        name: str | None = None,
        *,
        driver: str = DEFAULT_DRIVER,
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        anonymous: bool = False,
    ) -> Volume:
        """The volume ``name``, made if it does not exist (Docker's get-or-create).

        ``name`` None (or empty) makes an anonymous-looking random name; with
        ``anonymous`` the volume also gets :data:`ANONYMOUS_LABEL`. An
        existing volume is returned as it is (its options and labels are
        not changed), as Docker does.
        """
        driver = driver or DEFAULT_DRIVER
        if driver != DEFAULT_DRIVER:
            raise SpecError(
                f'error looking up volume plugin {driver}: plugin "{driver}" not found '
                f'(only the "{DEFAULT_DRIVER}" driver is available)'
            )
        if not name:
            name = secrets.token_hex(32)
        else:
            validate_name(name)
        opts = dict(driver_opts or {})
        validate_options(opts)
        all_labels = dict(labels or {})
        if anonymous:
            all_labels.setdefault(ANONYMOUS_LABEL, "")
        with self._lock:
            existing = self._row(self._db, name)
            if existing is not None:
                return existing
            vol_dir = self.root / name
            made = False
            try:
                vol_dir.mkdir(mode=0o701)
                made = True
                (vol_dir / DATA_DIR).mkdir(mode=0o755)
                os.chmod(vol_dir / DATA_DIR, 0o755)  # not subject to the umask
                created = _now()
                with self._tx() as db:
                    db.execute(
                        "INSERT INTO volumes (name, driver, created, labels, options)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (name, driver, created, json.dumps(all_labels), json.dumps(opts)),
                    )
            except FileExistsError:
                raise VolumeError(f"create {name}: volume already exists under {vol_dir}") from None
            except BaseException:
                if made:
                    shutil.rmtree(vol_dir, ignore_errors=True)
                raise
            vol = self._row(self._db, name)
            assert vol is not None
        self._event("create", vol)
        return vol

    def _event(self, action: str, vol: Volume) -> None:
        if self.on_event is not None:
            self.on_event(action, vol.name, {"driver": vol.driver})

    def get(self, name: str) -> Volume:
        """The volume ``name``; :class:`NoSuchVolume` (404) when there is none."""
        with self._lock:
            vol = self._row(self._db, name)
        if vol is None:
            raise NoSuchVolume(f"get {name}: no such volume")
        return vol

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._row(self._db, name) is not None

    def inspect(self, name: str) -> dict[str, Any]:
        """Docker's ``Volume`` object for ``name``."""
        return self.get(name).to_docker()

    def volumes(self) -> _Volumes:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, driver, created, labels, options FROM volumes ORDER BY name"
            ).fetchall()
        return [self._volume(r) for r in rows]

    def list(self, filters: _Filters | None = None) -> _Docs:
        """Docker's ``Volume`` objects matching ``filters`` (``GET /volumes``).

        Filters as Docker's: ``dangling`` (``true``/``1``: no container uses
        it; ``false``/``0``: one does), ``driver``, ``label`` (``key`` or
        ``key=value``; every one must match), ``label!`` (none may match),
        ``name`` (a part of the name; a regular expression as in Docker).
        Values of one key are alternatives, except ``label`` (all of them).
        """
        filters = dict(filters or {})
        for key in filters:
            if key not in _LIST_FILTERS:
                raise SpecError(f"invalid filter '{key}'")
        dangling: bool | None = None
        for value in filters.get("dangling", []):
            dangling = _parse_bool("dangling", value)
        used = self._used_names()
        out: _Docs = []
        for vol in self.volumes():
            if dangling is not None and (vol.name not in used) != dangling:
                continue
            if "driver" in filters and vol.driver not in filters["driver"]:
                continue
            if "name" in filters and not any(_name_matches(vol.name, p) for p in filters["name"]):
                continue
            if not all(_label_matches(vol.labels, want) for want in filters.get("label", [])):
                continue
            if any(_label_matches(vol.labels, want) for want in filters.get("label!", [])):
                continue
            out.append(vol.to_docker())
        return out

    # -- references -------------------------------------------------------------------

    def _used_names(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT volume FROM refs")}

    def refs(self, name: str) -> _Names:
        """The ids of the containers using ``name`` (sorted)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT container FROM refs WHERE volume = ? ORDER BY container", (name,)
            ).fetchall()
        return [r[0] for r in rows]

    def volumes_of(self, container_id: str) -> _Names:
        """The names of the volumes ``container_id`` uses (sorted)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT volume FROM refs WHERE container = ? ORDER BY volume", (container_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def use(self, name: str, container_id: str) -> str:
        """Record that ``container_id`` uses ``name``; its mountpoint.

        A volume with driver options is mounted here if it is not mounted
        yet (first reference, or after a reboot). Idempotent.
        """
        with self._lock:
            vol = self.get(name)
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO refs (volume, container) VALUES (?, ?)",
                    (name, container_id),
                )
                if vol.options:
                    self._mount(vol)
        return vol.mountpoint

    def ensure_mounted(self, name: str) -> str:
        """Mount a volume with driver options if it is not (e.g. before a start after a reboot)."""
        with self._lock:
            vol = self.get(name)
            if vol.options:
                self._mount(vol)
        return vol.mountpoint

    def release(self, name: str, container_id: str) -> None:
        """Drop ``container_id``'s reference to ``name`` (none held: nothing to do)."""
        with self._lock:
            with self._tx() as db:
                db.execute(
                    "DELETE FROM refs WHERE volume = ? AND container = ?", (name, container_id)
                )
            self._unmount_if_unused(name)

    def release_container(self, container_id: str, remove_anonymous: bool = False) -> _Names:
        """Drop every reference of ``container_id``; the names of the volumes removed.

        With ``remove_anonymous`` (``docker rm -v``, and ``--rm`` containers)
        the container's anonymous volumes that nobody else uses are removed,
        as Docker does; named volumes always stay.
        """
        removed: _Names = []
        with self._lock:
            names = self.volumes_of(container_id)
            with self._tx() as db:
                db.execute("DELETE FROM refs WHERE container = ?", (container_id,))
            for name in names:
                self._unmount_if_unused(name)
                if remove_anonymous:
                    vol = self._row(self._db, name)
                    if vol is not None and vol.anonymous and not self.refs(name):
                        self._remove(vol)
                        removed.append(name)
        return removed

    def reconcile(self, live_container_ids: set[str]) -> _Names:
        """Drop the references of containers not in ``live_container_ids``; their ids.

        For the engine's start-up: a container half-made when the daemon was
        killed holds references but has no row. The anonymous volumes made
        for it go too (nothing else can know them: ``--volumes-from`` needs
        the container), so such a crash leaves no volume behind.
        """
        with self._lock:
            holders = {r[0] for r in self._db.execute("SELECT DISTINCT container FROM refs")}
        gone = sorted(holders - set(live_container_ids))
        for cid in gone:
            self.release_container(cid, remove_anonymous=True)
        return gone

    # -- remove, prune ----------------------------------------------------------------

    def remove(self, name: str, force: bool = False) -> None:
        """Remove ``name`` and its data.

        :class:`VolumeInUse` (409) while a container uses it, with or without
        ``force`` (as Docker); ``force`` only makes a missing volume no error.
        """
        with self._lock:
            vol = self._row(self._db, name)
            if vol is None:
                if force:
                    return
                raise NoSuchVolume(f"get {name}: no such volume")
            refs = self.refs(name)
            if refs:
                raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(refs)}]")
            self._remove(vol)

    def _remove(self, vol: Volume) -> None:
        if vol.options:
            self._unmount(vol)
        with self._tx() as db:
            db.execute("DELETE FROM volumes WHERE name = ?", (vol.name,))
        self._event("destroy", vol)
        vol_dir = self.root / vol.name
        data = vol_dir / DATA_DIR
        if os.path.isdir(data) and _is_mountpoint(str(data)):
            # never delete through a mount we could not detach: leave the directory
            return
        shutil.rmtree(vol_dir, ignore_errors=True)

    def prune(
        self, filters: _Filters | None = None, *, all_default: bool = False
    ) -> dict[str, Any]:
        """Remove unused volumes; Docker's ``VolumePruneResponse``.

        Only anonymous volumes unless the filter ``all=true`` (Docker 23+;
        ``all_default`` for API clients older than 1.42, which pruned all).
        ``label`` / ``label!`` filters as :meth:`list`.
        """
        filters = dict(filters or {})
        for key in filters:
            if key not in _PRUNE_FILTERS:
                raise SpecError(f"invalid filter '{key}'")
        prune_all = all_default
        for value in filters.get("all", []):
            prune_all = _parse_bool("all", value)
        deleted: _Names = []
        reclaimed = 0
        with self._lock:
            used = self._used_names()
            for vol in self.volumes():
                if vol.name in used or (not prune_all and not vol.anonymous):
                    continue
                if not all(_label_matches(vol.labels, w) for w in filters.get("label", [])):
                    continue
                if any(_label_matches(vol.labels, w) for w in filters.get("label!", [])):
                    continue
                size = 0 if vol.options else _tree_size(vol.mountpoint)
                self._remove(vol)
                deleted.append(vol.name)
                reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    def usage(self, name: str) -> dict[str, int]:
        """Docker's ``UsageData`` (``Size`` in bytes, ``RefCount``) for ``system df``."""
        vol = self.get(name)
        return {"Size": _tree_size(vol.mountpoint), "RefCount": len(self.refs(name))}

    # -- mounting volumes with driver options -----------------------------------------

    def _mount(self, vol: Volume) -> None:
        if _is_mountpoint(vol.mountpoint):
            return
        from bulkhead.snapshots import Mount
        from bulkhead.snapshots.mount import mount_one

        device = vol.options.get("device", "")
        fstype = vol.options.get("type", "")
        words = [w for w in vol.options.get("o", "").split(",") if w]
        if not device:
            raise VolumeError(
                f"error while mounting volume '{vol.name}': missing device in volume options"
            )
        try:
            mount_one(Mount(type=fstype, source=device, options=words), vol.mountpoint)
        except OSError as exc:
            data = vol.options.get("o", "")
            raise VolumeError(
                f"error while mounting volume '{vol.mountpoint}': failed to mount local volume: "
                f"mount {device}:{vol.mountpoint}{f', data: {data}' if data else ''}: "
                f"{os.strerror(exc.errno or errno.EIO).lower()}"
            ) from None

    def _unmount(self, vol: Volume) -> None:
        from bulkhead.snapshots.mount import unmount_all

        unmount_all(vol.mountpoint)

    def _unmount_if_unused(self, name: str) -> None:
        vol = self._row(self._db, name)
        if vol is not None and vol.options and not self.refs(name):
            self._unmount(vol)
