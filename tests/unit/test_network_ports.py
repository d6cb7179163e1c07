"""Published port requests, host port allocation (real sockets on 127.0.0.1), inspect shapes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bulkhead.network.ports import (
    Binding,
    PortAllocationError,
    PortAllocator,
    Request,
    exposed_keys,
    parse_key,
    proxy_target,
    requests,
    settings_ports,
    summary_ports,
    v6_listenable,
)


@pytest.fixture
def alloc() -> Iterator[PortAllocator]:
    a = PortAllocator()
    yield a
    a.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parse_key() -> None:
    assert parse_key("80") == (80, 80, "tcp")
    assert parse_key("8000-8010/UDP") == (8000, 8010, "udp")
    for bad in ("0", "70000", "80/icmp", "90-80", "x"):
        with pytest.raises(PortAllocationError):
            parse_key(bad)


def test_requests() -> None:
    got = requests(
        ["80/tcp", "443/tcp", "53/udp"],
        {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "81-82/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9001-9002"}],
            "90/tcp": [{"HostIp": "", "HostPort": "7000-7005"}],
            "91/tcp": [{"HostIp": "[::1]", "HostPort": ""}],
            "92/tcp": [{"HostIp": "::ffff:127.0.0.1", "HostPort": "9200"}],
        },
        publish_all=True,
    )
    assert got == [
        Request("tcp", 80, "", 8080, 0),
        Request("tcp", 81, "127.0.0.1", 9001, 9001),
        Request("tcp", 82, "127.0.0.1", 9002, 9002),
        Request("tcp", 90, "", 7000, 7005),
        Request("tcp", 91, "::1", 0, 0),
        Request("tcp", 92, "127.0.0.1", 9200, 0),  # IPv4-mapped: IPv4, as moby's To4
        Request("tcp", 443),
        Request("udp", 53),
    ]
    assert requests(["443/tcp"], {}, publish_all=False) == []
    with pytest.raises(PortAllocationError, match="invalid ranges"):
        requests([], {"80-81/tcp": [{"HostPort": "90-99"}]}, publish_all=False)
    with pytest.raises(PortAllocationError, match="invalid IP address"):
        requests([], {"80/tcp": [{"HostIp": "nope", "HostPort": "1"}]}, publish_all=False)


def test_allocate_holds_the_port_and_release_frees_it(alloc: PortAllocator) -> None:
    port = _free_port()
    got = alloc.allocate("c1", [Request("tcp", 80, "127.0.0.1", port)], ["172.18.0.2"])
    assert got == [Binding("tcp", 80, "127.0.0.1", port)]
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))  # nothing else can take it
    with pytest.raises(PortAllocationError) as exc:
        alloc.allocate("c2", [Request("tcp", 80, "", port)], ["172.18.0.3"])
    assert str(exc.value) == f"Bind for 0.0.0.0:{port} failed: port is already allocated"
    # udp is another port space
    assert alloc.allocate("c2", [Request("udp", 80, "127.0.0.1", port)], ["172.18.0.3"])
    alloc.release("c1")
    assert alloc.bindings("c1") == []
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))


def test_port_in_use_by_another_program_all_or_nothing(alloc: PortAllocator) -> None:
    free = _free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        with pytest.raises(PortAllocationError) as exc:
            alloc.allocate(
                "c1",
                [Request("tcp", 80, "127.0.0.1", free), Request("tcp", 81, "127.0.0.1", busy)],
                ["172.18.0.2"],
            )
    assert str(exc.value) == (
        f"failed to bind host port for 127.0.0.1:{busy}:172.18.0.2:81/tcp: address already in use"
    )
    assert alloc.bindings("c1") == []  # the first port was given back
    with socket.socket() as s:
        s.bind(("127.0.0.1", free))


def test_host_range_and_ephemeral(alloc: PortAllocator) -> None:
    base = _free_port()
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", base))
        except OSError:
            pytest.skip("the port went meanwhile")
        got = alloc.allocate("c1", [Request("tcp", 80, "127.0.0.1", base, base + 20)], ["10.0.0.2"])
    assert base < got[0].host_port <= base + 20
    eph = PortAllocator(ephemeral=(base + 30, base + 40))
    try:
        a = eph.allocate(
            "c1", [Request("tcp", 80, "127.0.0.1"), Request("udp", 81, "127.0.0.1")], ["10.0.0.2"]
        )
        assert base + 30 <= a[0].host_port <= base + 40 and a[1].host_port > a[0].host_port
    finally:
        eph.close()


def test_families(alloc: PortAllocator) -> None:
    with pytest.raises(PortAllocationError, match="family"):
        alloc.allocate("c1", [Request("tcp", 80, "127.0.0.1", _free_port())], ["fd00::2"])
    # an IPv6 host address of an IPv4-only container: held, for the proxy to its IPv4 address
    port = _free_port()
    got = alloc.allocate("c1", [Request("tcp", 80, "::1", port)], ["172.18.0.2"])
    assert got == [Binding("tcp", 80, "::1", port)]
    assert proxy_target(got[0], "172.18.0.2", "") == "172.18.0.2"
    ((b, sock),) = alloc.held("c1")
    assert b == got[0] and sock is not None and sock.getsockname()[:2] == ("::1", port)


def test_every_address_is_both_families_on_one_port() -> None:
    """Docker (userland proxy on): ``-p 8080:80`` is ``0.0.0.0:8080`` and ``[::]:8080``,
    the latter to the IPv4 address of a container without IPv6; one port for both."""
    lo = _free_port()
    a = PortAllocator(ephemeral=(lo, lo + 50), ipv6=True)
    try:
        got = a.allocate("c1", [Request("tcp", 80), Request("udp", 53)], ["172.18.0.2"])
        assert [(b.proto, b.host_ip) for b in got] == [
            ("tcp", "0.0.0.0"),
            ("tcp", "::"),
            ("udp", "0.0.0.0"),
            ("udp", "::"),
        ]
        assert got[0].host_port == got[1].host_port and got[2].host_port == got[3].host_port
        # the [::] socket is bound IPv6-only: it does not take the IPv4 port
        ((_, sock6),) = [(b, s) for b, s in a.held("c1") if b == got[1]]
        assert sock6 is not None and sock6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        a.release("c1")
        # a host without IPv6: only 0.0.0.0 (moby's IsV6Listenable)
        a6 = PortAllocator(ephemeral=(lo, lo + 50), ipv6=False)
        try:
            got = a6.allocate("c2", [Request("tcp", 80)], ["172.18.0.2"])
            assert [b.host_ip for b in got] == ["0.0.0.0"]
        finally:
            a6.close()
        # dual stack: each family to its own address
        got = a.allocate("c3", [Request("tcp", 80)], ["172.18.0.3", "fd00::3"])
        assert [b.host_ip for b in got] == ["0.0.0.0", "::"]
        assert got[0].host_port == got[1].host_port
    finally:
        a.close()
    assert v6_listenable()  # this test runs with IPv6 on loopback


def test_which_bindings_the_proxy_serves() -> None:
    v4, v6 = "172.18.0.2", "fd00::2"
    b = Binding
    # IPv4 host addresses: DNAT (127.0.0.1 included, route_localnet); SCTP: never
    assert proxy_target(b("tcp", 80, "0.0.0.0", 8080), v4, "") == ""
    assert proxy_target(b("tcp", 80, "127.0.0.1", 8080), v4, "") == ""
    assert proxy_target(b("sctp", 80, "::", 8080), v4, "") == ""
    # no IPv6 in the container: every IPv6 host address, to its IPv4 address
    assert proxy_target(b("tcp", 80, "::", 8080), v4, "") == v4
    assert proxy_target(b("udp", 80, "fd00:aa::1", 8080), v4, "") == v4
    # IPv6 in the container: DNAT, but for [::1] (of :: and ::1)
    assert proxy_target(b("tcp", 80, "::", 8080), v4, v6) == v6
    assert proxy_target(b("tcp", 80, "::1", 8080), v4, v6) == v6
    assert proxy_target(b("tcp", 80, "fd00:aa::1", 8080), v4, v6) == ""


def test_inspect_shapes() -> None:
    keys = exposed_keys(["443/tcp", "53/udp"], {"80/tcp": []})
    assert keys == ["53/udp", "80/tcp", "443/tcp"]
    b = [Binding("tcp", 80, "0.0.0.0", 8080)]
    assert settings_ports(keys, b) == {
        "53/udp": None,
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
        "443/tcp": None,
    }
    assert summary_ports(keys, b) == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 53, "Type": "udp"},
        {"PrivatePort": 443, "Type": "tcp"},
    ]


def test_ps_ports_column_as_docker() -> None:
    from bulkhead.cli.containers import _ports

    assert _ports([]) == ""
    assert (
        _ports(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            ]
        )
        == "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
    )
    assert (
        _ports(
            [
                {"IP": "0.0.0.0", "PrivatePort": 9001, "PublicPort": 9001, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 9000, "PublicPort": 9000, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"},
                {"PrivatePort": 444, "Type": "tcp"},
                {"PrivatePort": 53, "Type": "udp"},
            ]
        )
        == "53/udp, 443-444/tcp, 0.0.0.0:9000-9001->9000-9001/tcp"
    )


def test_userland_proxy_off_binds_no_ipv6_for_an_ipv4_only_container() -> None:
    """dockerd's ``userland-proxy: false``: nothing relayed across families."""
    from bulkhead.daemon import load_config

    on = PortAllocator(ipv6=True)
    off = PortAllocator(ipv6=True, userland_proxy=False)
    req = [Request(proto="tcp", container_port=80)]
    try:
        assert [b.host_ip for b in on.allocate("a", req, ["10.0.0.2"])] == ["0.0.0.0", "::"]
        assert [b.host_ip for b in off.allocate("b", req, ["10.0.0.3"])] == ["0.0.0.0"]
        with pytest.raises(PortAllocationError, match=r"::1 \(userland-proxy is off\)"):
            off.allocate(
                "c", [Request(proto="tcp", container_port=80, host_ip="::1")], ["10.0.0.4"]
            )
        dual = off.allocate("d", req, ["10.0.0.5", "fd00::5"])  # DNAT serves both families
        assert [b.host_ip for b in dual] == ["0.0.0.0", "::"]
    finally:
        on.close()
        off.close()
    assert load_config(["--userland-proxy=false"]).userland_proxy is False
    assert load_config(["--userland-proxy"]).userland_proxy is True
    assert load_config([]).userland_proxy is True
