"""Snapshots: the filesystems containers run on, as containerd's snapshotters describe them.

Vocabulary (containerd's, ``snapshots/snapshotter.go``)
--------------------------------------------------------
*snapshot*
    A directory tree managed by a :class:`Snapshotter`, known by a *key*.
    Snapshots form chains: each may have a *parent*, whose tree it starts from.
*committed* snapshot
    Immutable; may be the parent of others. An image's unpacked layers are a
    chain of committed snapshots, each named by its *chain id*.
*active* snapshot
    Writable; made by :meth:`Snapshotter.prepare` on top of a committed parent
    (or empty). A container's root filesystem is one; a layer being unpacked
    is another. :meth:`Snapshotter.commit` turns it into a committed snapshot
    under a new *name* (the active key is gone afterwards).
*view*
    A read-only snapshot of a committed parent (:meth:`Snapshotter.view`): to
    look into an image without copying it. Views cannot be committed.
*mounts*
    A snapshotter never mounts anything itself: it returns a list of
    :class:`Mount` (data: type, source, options) that, mounted in order at one
    target, show the snapshot's tree. :func:`bulkhead.snapshots.mount.mount_all`
    performs them; a container runtime may instead put them into its bundle.
*usage*
    The disk space and inodes a snapshot uses *itself* (its own directory,
    not its parents'): :class:`Usage`.
*labels*
    Free-form string metadata on a snapshot (``update`` changes them); the
    image store keeps its garbage-collection roots there.

Implementations: :mod:`bulkhead.snapshots.overlay` (overlayfs: a snapshot
stores only its own changes) and :mod:`bulkhead.snapshots.vfs` (every
snapshot is a full copy: slow but works on any filesystem).
:mod:`bulkhead.snapshots.diff` turns an active snapshot's changes into a
layer tar.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "DRIVERS",
    "Info",
    "Kind",
    "Mount",
    "Snapshotter",
    "Usage",
    "WalkFilter",
    "open_snapshotter",
]


class Kind(enum.StrEnum):
    """What a snapshot is: see the module's vocabulary."""

    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Info:
    """What a snapshotter knows about one snapshot.

    ``name`` is the key (active, view) or the name given at commit.
    ``parent`` is the parent's name, or None for a snapshot of an empty tree.
    ``created`` and ``updated`` are seconds since the epoch (UTC).
    """

    kind: Kind
    name: str
    parent: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0


@dataclass(frozen=True)
class Usage:
    """Disk use of one snapshot's own directory: bytes allocated and inodes."""

    size: int = 0
    inodes: int = 0


@dataclass(frozen=True)
class Mount:
    """One mount to perform, as data (containerd's ``mount.Mount``).

    ``type`` is the filesystem type (``"overlay"``, ``"bind"``, ``"tmpfs"``),
    ``source`` what to mount (a directory for binds, ``"overlay"`` for
    overlay), ``options`` the mount(8)-style option words (``"ro"``,
    ``"rbind"``, ``"lowerdir=/a:/b"``). ``target`` is a path relative to the
    target given to ``mount_all`` (empty: the target itself).
    """

    type: str
    source: str
    target: str = ""
    options: list[str] = field(default_factory=list)


#: A filter for :meth:`Snapshotter.walk`: a predicate, or a containerd-style
#: filter string (see :func:`bulkhead.snapshots.metadata.parse_filter`).
WalkFilter = Callable[[Info], bool] | str


@runtime_checkable
class Snapshotter(Protocol):
    """What every snapshotter does (containerd's ``snapshots.Snapshotter``).

    Keys and names share one namespace: an active snapshot's key and a
    committed snapshot's name can never be equal. Errors: SnapshotNotFound,
    SnapshotExists, SnapshotError (``bulkhead.errors``).
    """

    root: str

    def prepare(
        self, key: str, parent: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Mount]:
        """Create an active (writable) snapshot ``key`` on top of committed ``parent``."""
        ...

    def view(
        self, key: str, parent: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Mount]:
        """Create a read-only view ``key`` of committed ``parent``."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view (again)."""
        ...

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        """Turn active ``key`` into committed ``name`` (``key`` is gone afterwards).

        Nothing may have the snapshot mounted for writing any more.
        """
        ...

    def remove(self, key: str) -> None:
        """Remove a snapshot; refused while other snapshots have it as parent."""
        ...

    def stat(self, key: str) -> Info:
        """The :class:`Info` of one snapshot."""
        ...

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change a snapshot's labels (``"labels"`` or ``"labels.<key>"`` field paths)."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk use of the snapshot's own directory."""
        ...

    def walk(self, filter: WalkFilter | None = None) -> Iterator[Info]:
        """Every snapshot (matching ``filter``), in id order."""
        ...

    def close(self) -> None:
        """Release the metadata store."""
        ...


#: the snapshotter names :func:`open_snapshotter` knows
DRIVERS = ("overlay", "vfs")


def open_snapshotter(driver: str, state_dir: str) -> Snapshotter:
    """Open snapshotter ``driver`` (``"overlay"``, ``"vfs"`` or ``"auto"``) in ``state_dir/<driver>``.

    ``"auto"`` picks overlay when a test mount under ``state_dir`` works
    (:func:`bulkhead.snapshots.overlay.supported`) and vfs otherwise. Each
    driver keeps its own directory, so switching drivers never mixes them.
    """
    import os

    from bulkhead.errors import SnapshotError

    if driver == "auto":
        from bulkhead.snapshots import overlay

        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        driver = "overlay" if overlay.supported(state_dir) is None else "vfs"
    root = os.path.join(state_dir, driver)
    if driver == "overlay":
        from bulkhead.snapshots.overlay import OverlaySnapshotter

        return OverlaySnapshotter(root)
    if driver == "vfs":
        from bulkhead.snapshots.vfs import VfsSnapshotter

        return VfsSnapshotter(root)
    raise SnapshotError(f"unknown snapshotter {driver!r}: known are {', '.join(DRIVERS)} and auto")
