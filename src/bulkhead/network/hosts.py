"""A container's ``/etc/hosts``, written as Docker writes it (moby's ``etchosts``).

Layout of the file (one *record* a line, ``<ip>\\t<names>``)::

    127.0.0.1	localhost
    ::1	localhost ip6-localhost ip6-loopback     \\
    fe00::	ip6-localnet                          |  the IPv6 defaults, left out
    ff00::	ip6-mcastprefix                       |  (with every other IPv6
    ff02::1	ip6-allnodes                         |  record) when the container
    ff02::2	ip6-allrouters                       /  has no IPv6
    10.0.0.9	db                                  --add-host db:10.0.0.9
    172.17.0.3	dbalias 3c0ffee00000 db             --link db:dbalias (default bridge)
    172.18.0.2	web.example.com web                 the container itself, a line per
                                                    address of each network it joins

*extra hosts*
    ``--add-host name:ip`` (or ``name=ip``; an IPv6 address may be in
    brackets). The address ``host-gateway`` stands for the daemon's
    host-gateway address: the default bridge's gateway, as Docker's.
*links*
    legacy ``--link name:alias`` on the default bridge: the linked
    container's address with the alias, its hostname and (when it differs
    from the alias) its name.
*own records*
    added when an endpoint joins (connect/start) and deleted when it leaves,
    in place: the file is bind-mounted into the running container.
*host networking*
    a copy of the daemon's ``/etc/hosts`` unless ``--add-host`` is given, in
    which case the file is built as above (Docker's behaviour).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bulkhead.errors import SpecError

#: The special ``--add-host`` address.
HOST_GATEWAY = "host-gateway"


@dataclass(frozen=True)
class Record:
    """One line: an address and the names it carries (space separated)."""

    ip: str
    names: str

    def line(self) -> str:
        return f"{self.ip}\t{self.names}\n"

    @property
    def is_ipv6(self) -> bool:
        try:
            return ipaddress.ip_address(self.ip.partition("%")[0]).version == 6
        except ValueError:
            return False


DEFAULT_IPV4 = (Record("127.0.0.1", "localhost"),)
DEFAULT_IPV6 = (
    Record("::1", "localhost ip6-localhost ip6-loopback"),
    # moby's records hold a netip.Addr, written as "fe00::" (older releases wrote "fe00::0")
    Record("fe00::", "ip6-localnet"),
    Record("ff00::", "ip6-mcastprefix"),
    Record("ff02::1", "ip6-allnodes"),
    Record("ff02::2", "ip6-allrouters"),
)


def parse_extra_host(entry: str, host_gateway: str | None = None) -> Record:
    """``name:ip`` / ``name=ip`` (``--add-host``, ``HostConfig.ExtraHosts``) as a record.

    ``host_gateway`` replaces the address ``host-gateway``; without one that
    address is refused."""
    name, sep, addr = entry.partition("=")
    if not sep:
        name, sep, addr = entry.partition(":")
    addr = addr.strip()
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    if not sep or not name or not addr:
        raise SpecError(f"invalid argument {entry!r}: bad format for add-host")
    if addr == HOST_GATEWAY:
        if not host_gateway:
            raise SpecError("unable to derive the IP value for host-gateway")
        addr = host_gateway
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise SpecError(
            f"invalid argument {entry!r}: invalid IP address in add-host: {addr!r}",
        ) from None
    return Record(str(ip), name)  # written in canonical form, as moby's netip.Addr


def link_record(ip: str, alias: str, hostname: str, name: str) -> Record:
    """The record of a legacy link (moby's ``aliasList``)."""
    names = f"{alias} {hostname}"
    if alias != name:
        names += f" {name}"
    return Record(ip, names)


def own_names(hostname: str, domainname: str = "") -> str:
    """The names of the container's own records: the FQDN, then its first label."""
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short, dot, _ = fqdn.partition(".")
    return f"{fqdn} {short}" if dot else fqdn


def own_records(addresses: Iterable[str], hostname: str, domainname: str = "") -> list[Record]:
    """A record per address of an endpoint (``<ip>\\t<fqdn> <hostname>``)."""
    names = own_names(hostname, domainname)
    return [Record(ip, names) for ip in addresses if ip]


def build(extra: Sequence[Record] = (), ipv6: bool = True) -> str:
    """The defaults and ``extra`` records (moby's ``Build``/``BuildNoIPv6``)."""
    records = list(DEFAULT_IPV4)
    if ipv6:
        records += DEFAULT_IPV6
        records += extra
    else:
        records += [r for r in extra if not r.is_ipv6]
    return "".join(r.line() for r in records)


def host_copy(path: str = "/etc/hosts") -> str:
    """The daemon's own hosts file (``--network host`` without ``--add-host``)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return build()
    return text if not text or text.endswith("\n") else text + "\n"


# --- changing the file of a running container -----------------------------------------


def write_in_place(path: str | os.PathLike[str], text: str) -> None:
    """Rewrite the file's content in place (truncate and write, same inode): the hosts and
    resolv.conf files are bind-mounted into running containers, and a rename would leave a
    container on the old inode."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock(path: str | os.PathLike[str]) -> threading.Lock:
    """The lock of one file (moby's ``pathLock``): a connect and a disconnect of the same
    container run in different worker threads, and a delete rewrites the whole file."""
    key = os.path.abspath(path)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def add(path: str | os.PathLike[str], records: Sequence[Record], ipv6: bool = True) -> None:
    """Append ``records`` (IPv6 ones only when the container has IPv6) to the file, which
    must exist (moby's ``Add``). A last line the user left without its newline is ended
    first, not run into the first record."""
    records = [r for r in records if ipv6 or not r.is_ipv6]
    if not records:
        return
    text = "".join(r.line() for r in records).encode()
    with _lock(path):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                text = b"\n" + text
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def delete(path: str | os.PathLike[str], records: Sequence[Record]) -> None:
    """Remove the lines that are exactly one of ``records`` (a line the user
    edited stays), rewriting the file in place."""
    if not records:
        return
    with _lock(path):
        _delete(path, records)


def _delete(path: str | os.PathLike[str], records: Sequence[Record]) -> None:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    gone = {(_norm(r.ip), r.names) for r in records}
    kept: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        ip, tab, names = line.partition("\t")
        if tab and not line.startswith("#") and (_norm(ip), names) in gone:
            continue
        kept.append(line + "\n")
    write_in_place(path, "".join(kept))


def _norm(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
