"""What the overlay and vfs snapshotters share: the root layout, metadata and bookkeeping.

Layout of a snapshotter's root::

    <root>/metadata.db          the metadata store (SQLite)
    <root>/snapshots/<id>/fs    the snapshot's own tree (overlay: its upper dir)
    <root>/snapshots/<id>/work  overlay's work dir (overlay only)

A new snapshot's directory is built as ``snapshots/new-<pid>-*`` (outside
the store's lock: a vfs copy may take seconds) and renamed to its id inside
the metadata transaction that records it; a removed one is renamed to
``snapshots/rm-<id>`` inside the transaction and deleted after it. What a
crash leaves behind (``new-*`` of dead processes, ``rm-*``, ids without a
row) is deleted when the snapshotter is next opened.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from bulkhead.errors import SnapshotError
from bulkhead.snapshots import Info, Kind, Mount, Usage, WalkFilter
from bulkhead.snapshots.metadata import MetaStore, Record, parse_filter


@dataclass(frozen=True)
class DiffDirs:
    """Where a snapshot's changes are, for :mod:`bulkhead.snapshots.diff`.

    ``upper`` is the snapshot's own directory and ``lowers`` its parents'
    (nearest first). ``overlay`` says that ``upper`` holds only the changes,
    in overlayfs's form (whiteout devices, opaque xattrs); otherwise it is a
    full tree to compare with ``lowers[0]``.
    """

    upper: str
    lowers: tuple[str, ...]
    overlay: bool


def disk_usage(path: str) -> Usage:
    """Bytes allocated (``st_blocks``) and inodes under ``path``, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    if not os.path.lexists(path):
        return Usage()
    stack = [path]  # iterative: trees of any depth
    while stack:
        p = stack.pop()
        st = os.lstat(p)
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            continue
        seen.add(ident)
        size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(p) as it:
                stack.extend(entry.path for entry in it)
    return Usage(size=size, inodes=len(seen))


def _building(name: str) -> bool:
    """Is ``name`` (``new-<pid>-*``) a directory a live process is still building?"""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != "new" or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BaseSnapshotter:
    """The bookkeeping of a snapshotter whose snapshots are directories under ``root``."""

    #: does the snapshot directory hold only changes (overlay) or a full tree (vfs)?
    stores_changes_only = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.snapshots_dir = os.path.join(self.root, "snapshots")
        os.makedirs(self.snapshots_dir, mode=0o700, exist_ok=True)
        self._store = MetaStore(os.path.join(self.root, "metadata.db"))
        self._clean_leftovers()

    # ------------------------------------------------------------------ layout

    def _dir(self, sid: int) -> str:
        return os.path.join(self.snapshots_dir, str(sid))

    def _fs(self, sid: int) -> str:
        return os.path.join(self.snapshots_dir, str(sid), "fs")

    def _clean_leftovers(self) -> None:
        # Under the write lock, so that no other process is between renaming
        # a directory and recording it; ``new-<pid>-*`` directories of live
        # processes are still being built and stay.
        with self._store.transaction() as tx:
            ids = tx.ids()
            doomed = [
                name
                for name in os.listdir(self.snapshots_dir)
                if not (name.isdigit() and int(name) in ids)
                and not name.startswith("rm-")
                and not _building(name)
            ]
            for name in doomed:
                os.rename(
                    os.path.join(self.snapshots_dir, name),
                    os.path.join(self.snapshots_dir, f"rm-{name}"),
                )
        for name in os.listdir(self.snapshots_dir):
            if name.startswith("rm-"):
                shutil.rmtree(os.path.join(self.snapshots_dir, name), ignore_errors=True)

    # ------------------------------------------------------------------ hooks

    def _populate(self, new_dir: str, kind: Kind, parent_ids: tuple[int, ...]) -> None:
        """Fill a new snapshot's directory (``fs`` and what else the driver needs)."""
        raise NotImplementedError

    def _mounts(self, record: Record) -> list[Mount]:
        """The mounts that show ``record``'s tree."""
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol

    def prepare(
        self, key: str, parent: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(
        self, key: str, parent: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(
        self, kind: Kind, key: str, parent: str | None, labels: dict[str, str] | None
    ) -> list[Mount]:
        # The directory is built outside the store's lock (a vfs copy can
        # take seconds; nothing else should wait for it), then recorded and
        # renamed to its id in one transaction that checks everything again.
        with self._store.read() as tx:
            parent_ids = tx.check_create(key, parent)
        new_dir = tempfile.mkdtemp(prefix=f"new-{os.getpid()}-", dir=self.snapshots_dir)
        try:
            self._populate(new_dir, kind, parent_ids)
            with self._store.transaction() as tx:
                record = tx.create(kind, key, parent, labels)
                if record.parent_ids != parent_ids:  # cannot happen: ids are never reused
                    raise SnapshotError(f"parent of {key!r} changed while it was prepared")
                os.rename(new_dir, self._dir(record.id))
        except BaseException:
            shutil.rmtree(new_dir, ignore_errors=True)
            raise
        return self._mounts(record)

    def mounts(self, key: str) -> list[Mount]:
        with self._store.read() as tx:
            record = tx.get(key)
        if record.info.kind == Kind.COMMITTED:
            raise SnapshotError(
                f"snapshot {key!r} is committed: mount a view or an active snapshot of it"
            )
        return self._mounts(record)

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        with self._store.read() as tx:
            record = tx.get(key)
        usage = disk_usage(self._fs(record.id))  # outside the lock: a vfs tree can be large
        with self._store.transaction() as tx:
            if tx.get(key).id != record.id:  # removed and prepared again meanwhile
                usage = disk_usage(self._fs(tx.get(key).id))
            tx.commit(name, key, usage, labels)

    def remove(self, key: str) -> None:
        with self._store.transaction() as tx:
            record = tx.remove(key)
            doomed = os.path.join(self.snapshots_dir, f"rm-{record.id}")
            try:
                os.rename(self._dir(record.id), doomed)
            except FileNotFoundError:
                doomed = ""
            except OSError as exc:
                raise SnapshotError(f"cannot remove snapshot {key!r}: {exc}") from exc
        if doomed:
            shutil.rmtree(doomed, ignore_errors=True)

    def stat(self, key: str) -> Info:
        with self._store.read() as tx:
            return tx.get(key).info

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels: all of them (no field paths, or ``"labels"``) or ``labels.<key>`` ones.

        A label set to an empty string (or absent from ``info`` with a
        ``labels.<key>`` path) is removed.
        """
        with self._store.transaction() as tx:
            current = tx.get(info.name).info
            labels = dict(current.labels)
            if not fieldpaths or "labels" in fieldpaths:
                labels = dict(info.labels)
            for path in fieldpaths:
                if path == "labels":
                    continue
                if not path.startswith("labels."):
                    raise SnapshotError(f"cannot update field {path!r}: only labels may change")
                label = path[len("labels.") :]
                if info.labels.get(label):
                    labels[label] = info.labels[label]
                else:
                    labels.pop(label, None)
            labels = {k: v for k, v in labels.items() if v != ""}
            return tx.set_labels(info.name, labels).info

    def usage(self, key: str) -> Usage:
        with self._store.read() as tx:
            record = tx.get(key)
        if record.info.kind == Kind.COMMITTED:
            return record.usage
        return disk_usage(self._fs(record.id))

    def walk(self, filter: WalkFilter | None = None) -> Iterator[Info]:
        with self._store.read() as tx:
            records = tx.all()
        predicate = parse_filter(filter) if isinstance(filter, str) else filter
        for record in records:
            if predicate is None or predicate(record.info):
                yield record.info

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> BaseSnapshotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ for differs

    def diff_dirs(self, key: str) -> DiffDirs:
        """The directories :mod:`bulkhead.snapshots.diff` compares for ``key``."""
        with self._store.read() as tx:
            record = tx.get(key)
        if record.info.kind == Kind.VIEW:
            raise SnapshotError(f"snapshot {key!r} is a view: it has no changes of its own")
        return DiffDirs(
            upper=self._fs(record.id),
            lowers=tuple(self._fs(p) for p in record.parent_ids),
            overlay=self.stores_changes_only,
        )
