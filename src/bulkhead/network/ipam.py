"""IP address management: subnets for networks, addresses for endpoints.

*default pools*
    where a network without ``--subnet`` gets one, as Docker's
    ``default-address-pools``: ``172.17.0.0/16`` ... ``172.31.0.0/16``
    (one /16 each), then ``192.168.0.0/16`` cut in /20s (the daemon's
    ``default-address-pools`` replace them, as dockerd's). A candidate is
    skipped when it overlaps another network's subnet or a route or address
    of the daemon's network namespace (:func:`routed_subnets`, read with
    pyroute2), so a new bridge never shadows a network the host reaches.
*IPv6*
    ``--ipv6`` without a v6 ``--subnet``: a /64 of a random RFC 4193 unique
    local prefix (``fd`` + a 40-bit random global id + a zero subnet id).
*addresses*
    the gateway takes the subnet's first host address unless ``--gateway``
    says otherwise; endpoints take the lowest free address of ``--ip-range``
    (the whole subnet by default), never the network or broadcast address.
    Allocations live in :class:`bulkhead.network.store.NetworkStore` and
    are written with the endpoint, in one transaction.

Errors are Docker's words: ``invalid CIDR address``, ``Pool overlaps with
other one on this address space``, ``no available IPv4 addresses on this
network's address pools``, ``Address already in use``...
"""

from __future__ import annotations

import ipaddress
import secrets
import sqlite3
from collections.abc import Iterable

from bulkhead.errors import NetworkConflict, SpecError
from bulkhead.network.store import NetworkStore, Pool

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


#: dockerd's ``default-address-pools`` when none are configured: (base, size)
DEFAULT_ADDRESS_POOLS: list[tuple[str, int]] = [
    *((f"172.{second}.0.0/16", 16) for second in range(17, 32)),
    ("192.168.0.0/16", 20),
]


def default_pools(
    address_pools: list[tuple[str, int]] | None = None,
) -> Iterable[ipaddress.IPv4Network]:
    """The candidate subnets of ``address_pools`` (dockerd's ``default-address-pools``:
    each ``base`` cut in subnets of prefix ``size``), in order; Docker's by default."""
    for base, size in address_pools or DEFAULT_ADDRESS_POOLS:
        network = ipaddress.IPv4Network(base)
        yield from network.subnets(new_prefix=size)


def parse_cidr(text: str, field: str) -> IPNetwork:
    """``172.20.0.0/16`` → the network; 400 ``invalid CIDR address: x`` otherwise.

    Host bits are cleared here (``172.20.0.5/16`` is ``172.20.0.0/16``);
    :func:`check_pools` refuses a ``--subnet`` that had them, as Docker does.
    """
    if "/" not in text:
        raise SpecError(f"invalid CIDR address: {text}", where=field)
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise SpecError(f"invalid CIDR address: {text}", where=field) from None


def parse_address(text: str, field: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise SpecError(f"invalid IP address: {text!r}", where=field) from None


def ula_subnet() -> ipaddress.IPv6Network:
    """A random RFC 4193 /64: ``fdXX:XXXX:XXXX::/64`` (40-bit global id, subnet 0)."""
    global_id = secrets.randbits(40)
    value = (0xFD << 120) | (global_id << 80)
    return ipaddress.IPv6Network((value, 64))


def routed_subnets() -> list[IPNetwork]:
    """The destinations of the daemon namespace's routes (main table) and its addresses.

    The default route (``0.0.0.0/0``) is left out: it overlaps everything.
    """
    from pyroute2 import IPRoute

    out: list[IPNetwork] = []
    with IPRoute() as ipr:
        for family in (2, 10):
            for r in ipr.get_routes(family=family, table=254):
                dst, plen = r.get("dst"), int(r.get("dst_len") or 0)
                if dst and plen:
                    out.append(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
        for a in ipr.get_addr():
            addr, plen = a.get("address"), int(a.get("prefixlen") or 0)
            if addr and a.get("family") == 2:
                out.append(ipaddress.ip_network(f"{addr}/{plen}", strict=False))
    return out


def overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


def choose_subnet(
    taken: list[IPNetwork],
    routed: list[IPNetwork],
    address_pools: list[tuple[str, int]] | None = None,
) -> ipaddress.IPv4Network:
    """The first default pool that overlaps neither ``taken`` nor ``routed``."""
    for candidate in default_pools(address_pools):
        if any(overlaps(candidate, t) for t in [*taken, *routed]):
            continue
        return candidate
    raise NetworkConflict(
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network"
    )


def check_pools(pools: list[Pool], taken: list[IPNetwork]) -> list[Pool]:
    """Validate ``--subnet/--gateway/--ip-range/--aux-address`` entries; return them
    normalized (the gateway defaults to the subnet's first host address).

    moby's ValidateIPAM: every problem of every entry, one per line, after
    ``invalid network config:`` (400) — a subnet with host bits set, an
    ip-range or address outside its subnet or of the other family.
    ``taken``: subnets of the other networks (an overlap is 409, Docker's
    ``Pool overlaps with other one on this address space``).
    """
    out: list[Pool] = []
    errors: list[str] = []
    for i, p in enumerate(pools):
        subnet = parse_cidr(p.subnet, f"IPAM.Config[{i}].Subnet")
        if subnet.version == 4 and subnet.num_addresses < 4:
            raise SpecError(f"subnet {subnet} is too small", where=f"IPAM.Config[{i}].Subnet")
        given = p.subnet.strip()
        if str(subnet) != given and ipaddress.ip_interface(given).ip != subnet.network_address:
            errors.append(f"invalid subnet {given}: it should be {subnet}")
        ip_range = ""
        if p.ip_range:
            rng = parse_cidr(p.ip_range, f"IPAM.Config[{i}].IPRange")
            errors += _range_errors(p.ip_range.strip(), rng, subnet)
            ip_range = str(rng)
        gateway = str(subnet.network_address + 1)
        if p.gateway:
            gw = parse_address(p.gateway, f"IPAM.Config[{i}].Gateway")
            problem = _address_error(gw, subnet)
            if problem:
                errors.append(f"invalid gateway {p.gateway}: {problem}")
            elif gw in (subnet.network_address, _broadcast(subnet)):
                errors.append(
                    f"invalid gateway {p.gateway}: it is the network or broadcast address of "
                    f"subnet {subnet}"
                )
            gateway = str(gw)
        aux: dict[str, str] = {}
        for name, value in sorted(p.aux.items()):
            addr = parse_address(value, f"IPAM.Config[{i}].AuxiliaryAddresses.{name}")
            problem = _address_error(addr, subnet)
            if problem:
                errors.append(f"invalid auxiliary address {name}: {problem}")
            aux[name] = str(addr)
        out.append(Pool(subnet=str(subnet), gateway=gateway, ip_range=ip_range, aux=aux))
    if errors:
        raise SpecError("invalid network config:\n" + "\n".join(errors))
    seen: list[IPNetwork] = list(taken)
    for p in out:
        subnet = ipaddress.ip_network(p.subnet)
        if any(overlaps(subnet, s) for s in seen):
            raise NetworkConflict("Pool overlaps with other one on this address space")
        seen.append(subnet)
    return out


def _family(version: int) -> str:
    return f"IPv{version}"


def _range_errors(given: str, rng: IPNetwork, subnet: IPNetwork) -> list[str]:
    if rng.version != subnet.version:
        return [f"invalid ip-range {given}: parent subnet is an {_family(subnet.version)} block"]
    errors = []
    if rng.prefixlen < subnet.prefixlen:
        errors.append(
            f"invalid ip-range {given}: CIDR block is bigger than its parent subnet {subnet}"
        )
    if str(rng) != given and ipaddress.ip_interface(given).ip != rng.network_address:
        errors.append(f"invalid ip-range {given}: it should be {rng}")
    if not rng.overlaps(subnet):
        errors.append(f"invalid ip-range {given}: parent subnet {subnet} doesn't contain ip-range")
    return errors


def _address_error(addr: IPAddress, subnet: IPNetwork) -> str:
    if addr.version != subnet.version:
        return f"parent subnet is an {_family(subnet.version)} block"
    if addr not in subnet:
        return f"parent subnet {subnet} doesn't contain this address"
    return ""


def _broadcast(net: IPNetwork) -> IPAddress | None:
    return net.broadcast_address if net.version == 4 else None


def allocate(
    store: NetworkStore,
    db: sqlite3.Connection,
    network_id: str,
    pool: Pool,
    owner: str,
    wanted: str = "",
) -> str:
    """Take an address of ``pool`` for ``owner`` inside transaction ``db``; return it.

    ``wanted`` (``--ip``): that address or an error (400 outside the subnet,
    409 ``Address already in use``); else the lowest free one of the range.
    """
    subnet = ipaddress.ip_network(pool.subnet)
    taken = store.allocated(db, network_id)
    if wanted:
        addr = parse_address(wanted, "IPAMConfig")
        if addr not in subnet or addr in (subnet.network_address, _broadcast(subnet)):
            raise SpecError(
                f"invalid address {wanted}: it does not belong to any of this network's subnets"
            )
        if str(addr) in taken:
            raise NetworkConflict(f"Address already in use: {wanted}")
        store.allocate(db, network_id, str(addr), owner)
        return str(addr)
    rng = ipaddress.ip_network(pool.ip_range) if pool.ip_range else subnet
    bcast = _broadcast(subnet)
    for i, candidate in enumerate(iter(rng)):
        if i > 1 << 20:
            break
        if candidate in (subnet.network_address, bcast) or str(candidate) in taken:
            continue
        store.allocate(db, network_id, str(candidate), owner)
        return str(candidate)
    family = "IPv4" if subnet.version == 4 else "IPv6"
    raise NetworkConflict(f"no available {family} addresses on this network's address pools")


def mac_for(ipv4: str) -> str:
    """Docker's MAC for an IPv4 address: ``02:42`` then the address's four bytes."""
    if not ipv4:
        return "02:42:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ipv4).packed)
