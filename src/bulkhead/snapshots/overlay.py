"""The overlay snapshotter: each snapshot stores only its own changes (containerd's ``overlay``).

An overlay mount stacks read-only *lower* directories under one writable
*upper* directory; the kernel shows their union. Writing a file from a lower
layer first *copies it up*; deleting one leaves a *whiteout* (a 0:0
character device) in the upper directory; a directory that replaces a lower
one is marked *opaque* (xattr ``trusted.overlay.opaque="y"``). overlayfs
also needs an empty *work* directory on the upper's filesystem.

The mounts a snapshot gets:

* no parents: a bind mount of its own ``fs`` directory (``rw`` for an
  active snapshot, ``ro`` for a view);
* a view of one parent: a read-only bind of the parent's ``fs``;
* a view of several: ``overlay`` with only ``lowerdir`` (read-only);
* an active snapshot with parents: ``overlay`` with ``index=off``,
  ``lowerdir`` (the parents, nearest first), ``upperdir`` and ``workdir``.

Mount options are data and carry absolute paths; with many layers their
text can exceed the one page mount(2) accepts: :func:`bulkhead.snapshots.mount.mount_all`
takes care of that (new mount API, or short ``/proc/self/fd`` paths).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from bulkhead.errors import SnapshotError
from bulkhead.snapshots import Kind, Mount
from bulkhead.snapshots.base import BaseSnapshotter
from bulkhead.snapshots.metadata import Record

#: overlayfs refuses more lower layers than this (``OVL_MAX_STACK``)
MAX_LAYERS = 500


class OverlaySnapshotter(BaseSnapshotter):
    """Snapshots as overlayfs layers under ``root`` (see the module's docstring)."""

    stores_changes_only = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = os.path.abspath(os.fspath(root))
        if "," in path or ":" in path:
            raise SnapshotError(
                f"overlay snapshotter root {path!r} contains ',' or ':', which overlay's"
                " mount options cannot carry"
            )
        super().__init__(path)

    def _populate(self, new_dir: str, kind: Kind, parent_ids: tuple[int, ...]) -> None:
        if len(parent_ids) > MAX_LAYERS:
            raise SnapshotError(
                f"too many layers: {len(parent_ids)} parents, overlayfs stacks at most"
                f" {MAX_LAYERS} lower directories"
            )
        os.mkdir(os.path.join(new_dir, "fs"), 0o755)
        if kind == Kind.ACTIVE:
            os.mkdir(os.path.join(new_dir, "work"), 0o711)

    def _mounts(self, record: Record) -> list[Mount]:
        parents = record.parent_ids
        kind = record.info.kind
        if not parents:
            mode = "ro" if kind == Kind.VIEW else "rw"
            return [Mount("bind", self._fs(record.id), options=[mode, "rbind"])]
        if kind == Kind.VIEW and len(parents) == 1:
            return [Mount("bind", self._fs(parents[0]), options=["ro", "rbind"])]
        lowerdir = "lowerdir=" + ":".join(self._fs(p) for p in parents)
        if kind == Kind.VIEW:
            return [Mount("overlay", "overlay", options=["ro", "index=off", lowerdir])]
        return [
            Mount(
                "overlay",
                "overlay",
                options=[
                    "index=off",
                    lowerdir,
                    "upperdir=" + self._fs(record.id),
                    "workdir=" + os.path.join(self._dir(record.id), "work"),
                ],
            )
        ]

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        super().commit(name, key, labels)
        # The work dir is only needed while the snapshot is mounted writable.
        with self._store.read() as tx:
            record = tx.get(name)
        work = os.path.join(self._dir(record.id), "work")
        try:
            for entry in os.listdir(work):
                os.rmdir(os.path.join(work, entry))
            os.rmdir(work)
        except OSError:
            pass


def supported(root: str | os.PathLike[str]) -> str | None:
    """Can overlay snapshots live under ``root``? None if so, else the reason why not.

    Mounts a throw-away overlay (two lowers, an upper and a work directory)
    in a temporary directory under ``root``, as containerd's
    ``overlayutils.Supported`` does: this catches a missing overlay module,
    a filesystem overlay cannot use as upper (NFS, another overlay) and a
    lack of privilege. Needs ``root`` to exist.
    """
    from bulkhead.snapshots.mount import mount_overlay, unmount_all

    try:
        base = tempfile.mkdtemp(prefix="overlay-check-", dir=os.fspath(root))
    except OSError as exc:
        return f"cannot create a directory under {os.fspath(root)}: {exc.strerror}"
    try:
        for d in ("l1", "l2", "upper", "work", "merged"):
            os.mkdir(os.path.join(base, d))
        opts = [
            "index=off",
            f"lowerdir={base}/l2:{base}/l1",
            f"upperdir={base}/upper",
            f"workdir={base}/work",
        ]
        try:
            mount_overlay(opts, os.path.join(base, "merged"), method="legacy")
        except OSError as exc:
            return f"overlay cannot be mounted under {os.fspath(root)}: {exc.strerror}"
        unmount_all(os.path.join(base, "merged"))
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)
