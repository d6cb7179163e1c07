"""The snapshot metadata store: one SQLite database in a snapshotter's root.

Each snapshot is a row with a small integer *id* (never reused:
``AUTOINCREMENT``), which names its directory (``snapshots/<id>``), its
*key* (or, once committed, its name), its kind, its parent's id, its labels
(JSON) and, for committed snapshots, its usage (computed once at commit:
committed snapshots never change). A parent is referenced by id, so
committing an active snapshot (which changes its key to the new name)
leaves its children pointing at it.

Every change runs in one ``BEGIN IMMEDIATE`` transaction
(:meth:`MetaStore.transaction`); snapshotters do their directory work inside
it, so that a failure rolls the row back with it (containerd does the same
with bolt).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bulkhead.errors import SnapshotError, SnapshotExists, SnapshotNotFound
from bulkhead.snapshots import Info, Kind, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    kind    TEXT NOT NULL,
    parent  INTEGER REFERENCES snapshots(id),
    labels  TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    size    INTEGER NOT NULL DEFAULT 0,
    inodes  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""


@dataclass(frozen=True)
class Record:
    """One snapshot row: its :class:`Info`, its id and its parents' ids (nearest first)."""

    id: int
    info: Info
    parent_ids: tuple[int, ...]
    usage: Usage


class Tx:
    """The operations of one transaction (from :meth:`MetaStore.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def _row(self, key: str) -> tuple[int, str, str, int | None, str, float, float, int, int]:
        row = self._c.execute(
            "SELECT id, key, kind, parent, labels, created, updated, size, inodes"
            " FROM snapshots WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise SnapshotNotFound(f"snapshot {key!r} does not exist")
        return row  # type: ignore[no-any-return]

    def _parents(self, parent: int | None) -> tuple[int, ...]:
        if parent is None:
            return ()
        rows = self._c.execute(
            "WITH RECURSIVE chain(id, parent, depth) AS ("
            " SELECT id, parent, 0 FROM snapshots WHERE id = ?"
            " UNION ALL SELECT s.id, s.parent, c.depth + 1 FROM snapshots s"
            " JOIN chain c ON s.id = c.parent)"
            " SELECT id FROM chain ORDER BY depth",
            (parent,),
        ).fetchall()
        return tuple(r[0] for r in rows)

    def _name(self, sid: int | None) -> str | None:
        if sid is None:
            return None
        row = self._c.execute("SELECT key FROM snapshots WHERE id = ?", (sid,)).fetchone()
        return None if row is None else str(row[0])

    def _record(self, row: tuple[int, str, str, int | None, str, float, float, int, int]) -> Record:
        sid, key, kind, parent, labels, created, updated, size, inodes = row
        info = Info(
            kind=Kind(kind),
            name=key,
            parent=self._name(parent),
            labels=json.loads(labels),
            created=created,
            updated=updated,
        )
        return Record(sid, info, self._parents(parent), Usage(size, inodes))

    def get(self, key: str) -> Record:
        """The record of ``key``; SnapshotNotFound if there is none."""
        return self._record(self._row(key))

    def _check_create(self, key: str, parent: str | None) -> int | None:
        if not key:
            raise SnapshotError("a snapshot key must not be empty")
        if self._c.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise SnapshotExists(f"snapshot {key!r} already exists")
        if not parent:
            return None
        prow = self._row(parent)
        if prow[2] != Kind.COMMITTED:
            raise SnapshotError(
                f"parent {parent!r} of {key!r} is {prow[2]}, not committed: only"
                " committed snapshots can be parents"
            )
        return prow[0]

    def check_create(self, key: str, parent: str | None) -> tuple[int, ...]:
        """Would :meth:`create` succeed now? Raise as it would; else the parent chain's ids."""
        return self._parents(self._check_create(key, parent))

    def create(
        self, kind: Kind, key: str, parent: str | None, labels: dict[str, str] | None
    ) -> Record:
        """Add an active snapshot or a view; the parent must be committed."""
        parent_id = self._check_create(key, parent)
        now = time.time()
        cur = self._c.execute(
            "INSERT INTO snapshots (key, kind, parent, labels, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, str(kind), parent_id, json.dumps(labels or {}, sort_keys=True), now, now),
        )
        assert cur.lastrowid is not None
        return self.get(key)

    def commit(self, name: str, key: str, usage: Usage, labels: dict[str, str] | None) -> Record:
        """Rename active ``key`` to committed ``name``, recording its usage."""
        row = self._row(key)
        if row[2] != Kind.ACTIVE:
            raise SnapshotError(f"cannot commit {key!r}: it is a {row[2]}, not an active snapshot")
        if self._c.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
            raise SnapshotExists(f"snapshot {name!r} already exists")
        merged = json.loads(row[4])
        merged.update(labels or {})
        self._c.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, size = ?,"
            " inodes = ? WHERE id = ?",
            (
                name,
                str(Kind.COMMITTED),
                json.dumps(merged, sort_keys=True),
                time.time(),
                usage.size,
                usage.inodes,
                row[0],
            ),
        )
        return self.get(name)

    def remove(self, key: str) -> Record:
        """Delete ``key``'s row; refused while it has children."""
        record = self.get(key)
        (children,) = self._c.execute(
            "SELECT COUNT(*) FROM snapshots WHERE parent = ?", (record.id,)
        ).fetchone()
        if children:
            raise SnapshotError(
                f"cannot remove snapshot {key!r}: {children} snapshot(s) have it as parent"
            )
        self._c.execute("DELETE FROM snapshots WHERE id = ?", (record.id,))
        return record

    def set_labels(self, key: str, labels: dict[str, str]) -> Record:
        """Replace ``key``'s labels."""
        row = self._row(key)
        self._c.execute(
            "UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
            (json.dumps(labels, sort_keys=True), time.time(), row[0]),
        )
        return self.get(key)

    def all(self) -> list[Record]:
        """Every record, in id order."""
        rows = self._c.execute(
            "SELECT id, key, kind, parent, labels, created, updated, size, inodes"
            " FROM snapshots ORDER BY id"
        ).fetchall()
        return [self._record(r) for r in rows]

    def ids(self) -> set[int]:
        """The ids in use."""
        return {r[0] for r in self._c.execute("SELECT id FROM snapshots")}


class MetaStore:
    """The SQLite file ``path``; one connection, serialised by a lock (threads may share it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # Under WAL, NORMAL is crash-safe without an fsync per commit.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A consistent read (a deferred transaction)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield Tx(self._conn)
            finally:
                self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- walk filters

_CLAUSE = re.compile(
    r"""^\s*(?P<field>name|parent|kind|labels\.(?:"(?P<qlabel>[^"]+)"|(?P<label>[^=!~\s]+)))
        \s*(?:(?P<op>==|!=|~=)\s*(?P<value>"[^"]*"|[^,]*?))?\s*$""",
    re.VERBOSE,
)


def parse_filter(text: str) -> Callable[[Info], bool]:
    """A predicate from a containerd-style filter string.

    Clauses are joined by ``,`` (all must hold). Each is ``field``
    (present and non-empty), ``field==value``, ``field!=value`` or
    ``field~=regexp``; fields are ``name``, ``parent``, ``kind`` and
    ``labels.<key>`` (or ``labels."<key>"`` for keys with dots or slashes).
    """
    checks: list[Callable[[Info], bool]] = []
    for clause in _split_clauses(text):
        m = _CLAUSE.match(clause)
        if m is None:
            raise SnapshotError(f"invalid snapshot filter {clause!r}")
        label = m.group("qlabel") or m.group("label")
        fieldname = "labels" if label else m.group("field")
        op = m.group("op")
        value = m.group("value") or ""
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        checks.append(_check(fieldname, label, op, value))
    return lambda info: all(c(info) for c in checks)


def _split_clauses(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [c for c in out if c.strip()]


def _check(fieldname: str, label: str | None, op: str | None, value: str) -> Callable[[Info], bool]:
    def get(info: Info) -> str | None:
        if label is not None:
            return info.labels.get(label)
        got = getattr(info, fieldname)
        return None if got is None else str(got)

    if op is None:
        return lambda info: bool(get(info))
    if op == "==":
        return lambda info: get(info) == value
    if op == "!=":
        return lambda info: get(info) != value
    pattern = re.compile(value)
    return lambda info: (v := get(info)) is not None and pattern.search(v) is not None
