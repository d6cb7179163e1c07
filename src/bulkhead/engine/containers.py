"""The engine's containers as records: what each one is and what state it is in.

Vocabulary (Docker's):

*container id*
    64 lowercase hex digits, random; ``docker ps`` shows the first 12.
*name*
    unique among containers, stored without the leading ``/`` that Docker's
    API shows (``"Names": ["/web"]``). Generated as ``adjective_surname``
    when the user gives none.
*ref*
    how a user names a container: a full id, a name (with or without ``/``)
    or an unambiguous id prefix, looked up in that order (Docker's).
*state*
    :class:`ContainerState`: ``created`` (bundle written, never started),
    ``running``, ``paused``, ``restarting``, ``removing``, ``exited`` or
    ``dead``, with the exit code, OOM flag, error and start/finish times.
    Times are RFC 3339 with nanoseconds in UTC; Docker's "zero time"
    ``0001-01-01T00:00:00Z`` stands for never.
*config* / *host_config*
    Docker's ``Config`` (image defaults merged in) and ``HostConfig`` as
    dicts, exactly what ``inspect`` shows.

:class:`ContainerStore` keeps them in SQLite (``<root>/containers.db``, WAL):
one row per container holding its record as JSON, the name in a UNIQUE
column so that two creates can never take the same name. Every change is
one transaction.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bulkhead.errors import NameConflict, NoSuchContainer, SpecError
from bulkhead.statedb import open_state_db, transaction

#: Docker's "never" (Go's zero time.Time).
ZERO_TIME = "0001-01-01T00:00:00Z"

#: What a container name may be (moby ``daemon/names.RestrictedNamePattern``).
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

STATUSES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")


def now_rfc3339() -> str:
    """The current time as RFC 3339 with nanoseconds, UTC (Docker's ``time.RFC3339Nano``)."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")  # Go's RFC3339Nano drops trailing zeros
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds cut to microseconds); 0 for zero."""
    if not text or text.startswith("0001-"):
        return 0.0
    main, _, rest = text.partition(".")
    frac = 0.0
    if rest:
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        frac = float("0." + digits) if digits else 0.0
    main = main.rstrip("Z")
    dt = datetime.strptime(main[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return dt.timestamp() + frac


class HealthResult(msgspec.Struct, kw_only=True):
    """One probe run: Docker's ``HealthcheckResult`` (``inspect``'s ``State.Health.Log``)."""

    start: str = ZERO_TIME
    end: str = ZERO_TIME
    exit_code: int = 0
    output: str = ""


class Health(msgspec.Struct, kw_only=True):
    """Docker's ``State.Health``: ``starting``, ``healthy`` or ``unhealthy``, the count of
    failures in a row and the last results (oldest first; see :mod:`bulkhead.engine.health`).

    ``probe_exec`` and ``probe_start`` name a probe that is running (its
    exec id and start time): a daemon killed meanwhile finds its result on
    the next start instead of losing it. Not shown by ``inspect``.
    """

    status: str = "starting"
    failing_streak: int = 0
    log: list[HealthResult] = msgspec.field(default_factory=list)
    probe_exec: str = ""
    probe_start: str = ""


class ContainerState(msgspec.Struct, kw_only=True):
    """Docker's ``ContainerState`` (lower-case names here; ``inspect`` renders Docker's).

    ``monitor_pid`` is the container's monitor process while one is live
    (running, or created with a monitor an early attach asked for).
    ``health``: the healthcheck's state (:class:`Health`).
    """

    status: str = "created"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    monitor_pid: int = 0
    #: None until the container first starts with a healthcheck (Docker's nil Health)
    health: Health | None = None


class Container(msgspec.Struct, kw_only=True):
    """One container as the engine records it.

    ``image`` is the image id (``sha256:...``), ``image_ref`` the name it was
    asked for by. ``snapshot_key`` is the snapshotter key of its writable
    root (``container-<id>``). ``mount_points`` are ``inspect``'s
    ``Mounts`` entries and ``volumes`` the named volumes it uses.
    """

    id: str
    name: str
    created: str
    path: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    image: str = ""
    image_ref: str = ""
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    host_config: dict[str, Any] = msgspec.field(default_factory=dict)
    runtime: str = "bulkhead"
    platform: str = "linux"
    driver: str = "overlay"
    state: ContainerState = msgspec.field(default_factory=ContainerState)
    restart_count: int = 0
    manually_stopped: bool = False  # docker stop: unless-stopped stays down
    snapshot_key: str = ""
    log_path: str = ""
    log_max_size: int | None = None  # None: the daemon's default
    log_max_files: int | None = None
    auto_remove: bool = False
    mount_points: list[dict[str, Any]] = msgspec.field(default_factory=list)
    volumes: list[str] = msgspec.field(default_factory=list)
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]


def new_container_id() -> str:
    """A fresh random container id (64 hex digits)."""
    return secrets.token_hex(32)


def check_name(name: str) -> str:
    """``name`` without its leading ``/``, or a 400 naming what is allowed."""
    if not NAME_RE.match(name):
        raise SpecError(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name.lstrip("/")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Container)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    doc     BLOB NOT NULL
);
"""


class ContainerStore:
    """The containers of one data root, in ``<root>/containers.db``.

    Safe to use from several threads of one process (one connection behind a
    lock) and from several processes (SQLite's own locking, WAL).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = open_state_db(self.root / "containers.db", _SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    # -- writing ----------------------------------------------------------------

    def add(self, container: Container) -> None:
        """Record a new container; :class:`NameConflict` (409) when its name is taken."""
        with self._tx() as db:
            self._check_free(db, container.name)
            db.execute(
                "INSERT INTO containers (id, name, created, doc) VALUES (?, ?, ?, ?)",
                (container.id, container.name, container.created, _encoder.encode(container)),
            )

    def name_in_use(self, name: str) -> str | None:
        """The id of the container called ``name``, if any."""
        row = self._db.execute(
            "SELECT id FROM containers WHERE name = ?", (name.lstrip("/"),)
        ).fetchone()
        return None if row is None else str(row[0])

    def check_name_free(self, name: str) -> None:
        """:class:`NameConflict` (409, Docker's message) when ``name`` is taken."""
        with self._lock:
            self._check_free(self._db, name)

    @staticmethod
    def _check_free(db: sqlite3.Connection, name: str) -> None:
        row = db.execute("SELECT id FROM containers WHERE name = ?", (name,)).fetchone()
        if row is not None:
            raise NameConflict(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{row[0]}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )

    def update(self, container_id: str, change: Callable[[Container], None]) -> Container:
        """Apply ``change`` to the stored record in one transaction; return the new record."""
        with self._tx() as db:
            row = db.execute("SELECT doc FROM containers WHERE id = ?", (container_id,)).fetchone()
            if row is None:
                raise NoSuchContainer(f"No such container: {container_id}")
            c = _decoder.decode(row[0])
            change(c)
            db.execute(
                "UPDATE containers SET doc = ? WHERE id = ?", (_encoder.encode(c), container_id)
            )
            return c

    def rename(self, container_id: str, new_name: str) -> Container:
        """Give a container a new (free) name."""
        new_name = check_name(new_name)
        with self._tx() as db:
            row = db.execute("SELECT doc FROM containers WHERE id = ?", (container_id,)).fetchone()
            if row is None:
                raise NoSuchContainer(f"No such container: {container_id}")
            c = _decoder.decode(row[0])
            if c.name == new_name:
                raise SpecError("Renaming a container with the same name as its current name")
            self._check_free(db, new_name)
            c.name = new_name
            db.execute(
                "UPDATE containers SET name = ?, doc = ? WHERE id = ?",
                (new_name, _encoder.encode(c), container_id),
            )
            return c

    def remove(self, container_id: str) -> None:
        """Forget a container (a missing one is fine)."""
        with self._tx() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    # -- reading ----------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by full id, name (``/`` optional) or unique id prefix (Docker's order)."""
        with self._lock:
            c = self._find(ref)
        if c is None:
            raise NoSuchContainer(f"No such container: {ref}")
        return c

    def _find(self, ref: str) -> Container | None:
        if not ref:
            return None
        row = self._db.execute("SELECT doc FROM containers WHERE id = ?", (ref,)).fetchone()
        if row is None:
            row = self._db.execute(
                "SELECT doc FROM containers WHERE name = ?", (ref.removeprefix("/"),)
            ).fetchone()
        if row is None and all(ch in "0123456789abcdef" for ch in ref):
            rows = self._db.execute(
                "SELECT doc FROM containers WHERE id LIKE ? LIMIT 2", (ref + "%",)
            ).fetchall()
            if len(rows) > 1:
                raise SpecError(f"multiple IDs found with provided prefix: {ref}")
            row = rows[0] if rows else None
        return None if row is None else _decoder.decode(row[0])

    def exists(self, container_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM containers WHERE id = ?", (container_id,)).fetchone()
        return row is not None

    def list(self) -> builtins.list[Container]:
        """Every container, newest first (``docker ps`` order)."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM containers ORDER BY rowid DESC").fetchall()
        return [_decoder.decode(r[0]) for r in rows]

    def ids(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._db.execute("SELECT id FROM containers")}


# --- names ---------------------------------------------------------------------

# A short version of moby's namesgenerator lists (adjectives and notable scientists).
_LEFT_WORDS = (
    "admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold "
    "boring brave busy charming clever compassionate competent condescending confident cool "
    "cranky crazy dazzling determined distracted dreamy eager ecstatic elastic elated elegant "
    "eloquent epic exciting fervent festive flamboyant focused friendly frosty funny gallant "
    "gifted goofy gracious great happy hardcore heuristic hopeful hungry infallible inspiring "
    "intelligent interesting jolly jovial keen kind laughing loving lucid magical modest musing "
    "mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic "
    "pensive practical priceless quirky quizzical recursing relaxed reverent romantic sad "
    "serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting "
    "unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous "
    "zen"
)
_LEFT = tuple(_LEFT_WORDS.split())
_RIGHT_WORDS = (
    "agnesi albattani allen almeida antonelli archimedes ardinghelli aryabhata austin babbage "
    "banach bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn blackwell bohr "
    "booth borg bose bouman boyd brahmagupta brattain brown buck burnell cannon carson cartwright "
    "cerf chandrasekhar chaplygin chatelet chatterjee chaum chebyshev clarke cohen colden cori "
    "cray curie darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley "
    "edison einstein elbakyan elgamal elion ellis engelbart euclid euler faraday feistel fermat "
    "fermi feynman franklin gagarin galileo galois ganguly gates gauss germain goldberg "
    "goldstine goldwasser golick goodall gould greider grothendieck haibt hamilton haslett "
    "hawking hellman heisenberg hermann herschel hertz heyrovsky hodgkin hofstadter hoover "
    "hopper hugle hypatia ishizaka jackson jang jennings jepsen johnson joliot jones kalam "
    "kapitsa kare keldysh keller kepler khayyam khorana kilby kirch knuth kowalevski lalande "
    "lamarr lamport leakey leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere "
    "mahavira margulis matsumoto maxwell mayer mccarthy mcclintock mclaren mclean mcnulty "
    "meitner mendel mendeleev meninsky merkle mestorf mirzakhani montalcini moore morse moser "
    "murdock napier nash neumann newton nightingale nobel noether northcutt noyce panini pare "
    "pascal pasteur payne perlman pike poincare poitras proskuriakova ptolemy raman ramanujan "
    "rhodes ride ritchie robinson roentgen rosalind rubin saha sammet sanderson satoshi shamir "
    "shannon shaw shirley shockley shtern sinoussi snyder solomon spence stonebraker sutherland "
    "swanson swartz swirles taussig tesla tharp thompson torvalds tu turing varahamihira "
    "vaughan villani visvesvaraya volhard wescoff wilbur wiles williams williamson wilson wing "
    "wozniak wright wu yalow yonath zhukovsky"
)
_RIGHT = tuple(_RIGHT_WORDS.split())


def random_name(taken: Callable[[str], bool]) -> str:
    """``adjective_surname`` not yet ``taken`` (a digit is appended after many collisions)."""
    for attempt in range(64):
        name = f"{secrets.choice(_LEFT)}_{secrets.choice(_RIGHT)}"
        if attempt >= 8:
            name += str(secrets.randbelow(10))
        if not taken(name):
            return name
    return f"bulkhead_{secrets.token_hex(6)}"
