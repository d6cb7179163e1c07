"""The daemon's state databases: one SQLite file per kind of record.

Containers (``containers.db``), volumes (``volumes.db``) and networks
(``networks.db``) each keep their records in a SQLite file of their own,
opened the same way by :func:`open_state_db`:

*WAL*
    write-ahead logging: readers never wait for a writer, and a crash
    leaves the last committed state (``synchronous=NORMAL``: no fsync per
    commit; a power loss may lose the newest commits, never consistency).
*autocommit connection*
    ``isolation_level=None``: Python's sqlite3 opens no hidden
    transactions; every change goes through :func:`transaction`.
*transaction*
    ``BEGIN IMMEDIATE`` … ``COMMIT`` under the store's lock (one
    connection, shared by the daemon's event loop and its worker
    threads): all of a change or none of it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path


def open_state_db(path: Path, schema: str, *, foreign_keys: bool = False) -> sqlite3.Connection:
    """Open (create) the database at ``path`` in WAL mode and apply ``schema`` (idempotent DDL)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """One transaction (``BEGIN IMMEDIATE``) under ``lock``: all of it or nothing."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


__all__ = ["open_state_db", "transaction"]
