"""Networks, endpoints and address allocations, in ``<root>/networks.db``.

*network*
    a named L2 segment: ``driver`` ``bridge`` (a Linux bridge on the
    daemon's side, :mod:`bulkhead.network.bridge`), ``host`` (the daemon's
    own network stack) or ``null`` (an empty namespace, Docker's ``none``).
    Docker's three *pre-defined* networks ``bridge``, ``host`` and ``none``
    exist from the daemon's first start and cannot be removed.
*IPAM pool*
    one subnet of a network (``Subnet``, optional ``IPRange`` the dynamic
    addresses come from, ``Gateway``), Docker's ``IPAM.Config`` entry.
*endpoint*
    a container's attachment to a network: its addresses (kept from create
    to removal, so a restart keeps them), MAC, aliases and, while the
    container runs, the host-side veth (``host_ifname``) and the interface
    name in the container (``ifname``, ``eth0``...).
*allocation*
    one address taken in a network: by an endpoint (its container id) or by
    the gateway (owner ``gateway``). The IPAM (:mod:`bulkhead.network.ipam`)
    writes them in the same transaction as the endpoint, so a daemon
    killed at any point leaves either both or neither.

One SQLite transaction per change; the connection is shared by the
daemon's threads behind a lock (as :class:`bulkhead.engine.containers.ContainerStore`).
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import sqlite3
import threading
from pathlib import Path

import msgspec

from bulkhead.errors import NoSuchNetwork, SpecError
from bulkhead.statedb import open_state_db, transaction


class Pool(msgspec.Struct, kw_only=True):
    """One ``IPAM.Config`` entry: ``subnet`` (CIDR), ``gateway``, ``ip_range`` (CIDR or "").

    ``auto``: chosen by the daemon (no ``--subnet``), not the user: static
    addresses (``--ip``) are refused on it, as Docker's.
    """

    subnet: str
    gateway: str = ""
    ip_range: str = ""
    auto: bool = False
    #: ``AuxiliaryAddresses`` (``--aux-address``): name -> address, kept from endpoints
    aux: dict[str, str] = msgspec.field(default_factory=dict)


class Network(msgspec.Struct, kw_only=True):
    """One network as the store keeps it (see the module docstring).

    ``bridge`` is the Linux bridge's interface name (``""`` for host/null);
    ``mtu`` 0 means the default (1500).
    """

    id: str
    name: str
    driver: str = "bridge"
    scope: str = "local"
    created: str = ""
    internal: bool = False
    enable_ipv6: bool = False
    attachable: bool = False
    ipam_driver: str = "default"
    pools: list[Pool] = msgspec.field(default_factory=list)
    options: dict[str, str] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    bridge: str = ""
    mtu: int = 0
    predefined: bool = False
    #: the bridge existed before the network (``-o com.docker.network.bridge.name=``
    #: naming one): never deleted by bulkhead
    foreign_bridge: bool = False
    #: bulkhead made the bridge (and has not deleted it since): only such a bridge is ever
    #: deleted; one found there (the user's ``bridge: br0``) only loses our addresses
    bridge_made: bool = False
    #: a removal began (no endpoint may join any more); a daemon killed before it ended
    #: finishes it at its next start
    removing: bool = False
    #: ``IPAM.Options`` as given at create (None when the request had none, as Docker's)
    ipam_options: dict[str, str] | None = None


class Endpoint(msgspec.Struct, kw_only=True):
    """A container's attachment to a network (see the module docstring).

    ``ipv4``/``ipv6`` are bare addresses (``""`` when none);
    ``static_ipv4``/``static_ipv6`` what ``--ip``/``--ip6`` asked for;
    ``network_name`` the network's name when attached (a stopped container's
    endpoint outlives a network removed meanwhile, as in Docker, and is shown
    and disconnected by that name).
    """

    id: str
    network_id: str
    container_id: str
    ipv4: str = ""
    ipv6: str = ""
    mac: str = ""
    aliases: list[str] = msgspec.field(default_factory=list)
    static_ipv4: str = ""
    static_ipv6: str = ""
    ifname: str = ""
    host_ifname: str = ""
    seq: int = 0
    network_name: str = ""
    #: ``GwPriority`` (``--gw-priority``): the highest one's network carries the default route
    gw_priority: int = 0
    #: ``network connect --link name:alias`` (``EndpointSettings.Links``): on this network,
    #: ``alias`` resolves to the container ``name`` for this container alone
    links: list[str] = msgspec.field(default_factory=list)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    id           TEXT PRIMARY KEY,
    network_id   TEXT NOT NULL,
    container_id TEXT NOT NULL,
    doc          BLOB NOT NULL,
    UNIQUE (network_id, container_id)
);
CREATE TABLE IF NOT EXISTS allocations (
    network_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    owner      TEXT NOT NULL,
    PRIMARY KEY (network_id, address)
);
"""

_enc = msgspec.json.Encoder()
_net_dec = msgspec.json.Decoder(Network)
_ep_dec = msgspec.json.Decoder(Endpoint)


def new_id() -> str:
    """A 64-hex id, as Docker's network and endpoint ids."""
    return secrets.token_hex(32)


class NetworkStore:
    """``<root>/networks.db``: networks, endpoints, allocations (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = open_state_db(self.root / "networks.db", _SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE``): all of it or nothing."""
        return transaction(self._db, self.lock)

    # -- networks -----------------------------------------------------------------

    def add_network(self, db: sqlite3.Connection, net: Network) -> None:
        db.execute(
            "INSERT INTO networks (id, name, doc) VALUES (?, ?, ?)",
            (net.id, net.name, _enc.encode(net)),
        )

    def put_network(self, db: sqlite3.Connection, net: Network) -> None:
        db.execute("UPDATE networks SET doc = ? WHERE id = ?", (_enc.encode(net), net.id))

    def remove_network(self, db: sqlite3.Connection, network_id: str) -> None:
        """The network and its addresses; its endpoints (stopped containers') stay."""
        db.execute("DELETE FROM allocations WHERE network_id = ?", (network_id,))
        db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def networks(self) -> builtins.list[Network]:
        with self.lock:
            rows = self._db.execute("SELECT doc FROM networks ORDER BY rowid").fetchall()
        return [_net_dec.decode(r[0]) for r in rows]

    def find(self, ref: str) -> Network | None:
        """By full id, then name, then unique id prefix (Docker's order)."""
        if not ref:
            return None
        with self.lock:
            row = self._db.execute("SELECT doc FROM networks WHERE id = ?", (ref,)).fetchone()
            if row is None:
                row = self._db.execute("SELECT doc FROM networks WHERE name = ?", (ref,)).fetchone()
            if row is None and all(ch in "0123456789abcdef" for ch in ref):
                rows = self._db.execute(
                    "SELECT doc FROM networks WHERE id LIKE ?", (ref + "%",)
                ).fetchall()
                if len(rows) > 1:
                    raise SpecError(
                        f"network {ref} is ambiguous ({len(rows)} matches found based on ID prefix)"
                    )
                row = rows[0] if rows else None
        return None if row is None else _net_dec.decode(row[0])

    def get(self, ref: str) -> Network:
        net = self.find(ref)
        if net is None:
            raise NoSuchNetwork(f"network {ref} not found")
        return net

    # -- endpoints --------------------------------------------------------------------

    def put_endpoint(self, db: sqlite3.Connection, ep: Endpoint) -> None:
        db.execute(
            "INSERT OR REPLACE INTO endpoints (id, network_id, container_id, doc) "
            "VALUES (?, ?, ?, ?)",
            (ep.id, ep.network_id, ep.container_id, _enc.encode(ep)),
        )

    def remove_endpoint(self, db: sqlite3.Connection, ep: Endpoint) -> None:
        db.execute("DELETE FROM endpoints WHERE id = ?", (ep.id,))
        db.execute(
            "DELETE FROM allocations WHERE network_id = ? AND owner = ?",
            (ep.network_id, ep.container_id),
        )

    def endpoints(
        self, *, network_id: str | None = None, container_id: str | None = None
    ) -> builtins.list[Endpoint]:
        """Endpoints, by network and/or container, in the order they were attached."""
        sql, args = "SELECT doc FROM endpoints", []
        where = []
        if network_id is not None:
            where.append("network_id = ?")
            args.append(network_id)
        if container_id is not None:
            where.append("container_id = ?")
            args.append(container_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.lock:
            rows = self._db.execute(sql, args).fetchall()
        return sorted((_ep_dec.decode(r[0]) for r in rows), key=lambda e: e.seq)

    # -- allocations ------------------------------------------------------------------

    def allocated(self, db: sqlite3.Connection, network_id: str) -> dict[str, str]:
        """address -> owner of every allocation of ``network_id``."""
        rows = db.execute(
            "SELECT address, owner FROM allocations WHERE network_id = ?", (network_id,)
        ).fetchall()
        return {str(a): str(o) for a, o in rows}

    def addresses(self, network_id: str) -> builtins.list[str]:
        """Every address taken in ``network_id`` (outside a transaction: a view)."""
        with self.lock:
            rows = self._db.execute(
                "SELECT address FROM allocations WHERE network_id = ?", (network_id,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def clear_allocations(self, db: sqlite3.Connection, network_id: str) -> None:
        db.execute("DELETE FROM allocations WHERE network_id = ?", (network_id,))

    def allocate(self, db: sqlite3.Connection, network_id: str, address: str, owner: str) -> None:
        db.execute(
            "INSERT INTO allocations (network_id, address, owner) VALUES (?, ?, ?)",
            (network_id, address, owner),
        )
