"""IPAM without netlink: pools, validation, allocations kept in the store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bulkhead.errors import NetworkConflict, SpecError
from bulkhead.network import ipam
from bulkhead.network.store import Network, NetworkStore, Pool


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_default_pools_are_dockers_in_order() -> None:
    pools = [str(p) for p in ipam.default_pools()]
    assert pools[:3] == ["172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]
    assert pools[14] == "172.31.0.0/16"
    assert pools[15:17] == ["192.168.0.0/20", "192.168.16.0/20"]
    assert len(pools) == 15 + 16


def test_choose_subnet_skips_taken_and_routed() -> None:
    assert str(ipam.choose_subnet([], [])) == "172.17.0.0/16"
    taken = [net("172.17.0.0/16")]
    routed = [net("172.18.3.0/24"), net("172.19.0.0/16"), net("10.0.0.0/8")]
    assert str(ipam.choose_subnet(taken, routed)) == "172.20.0.0/16"
    # a wide route covers several pools; v6 routes never collide with v4 pools
    assert str(ipam.choose_subnet([], [net("172.16.0.0/12"), net("fd00::/8")])) == (
        "192.168.0.0/20"
    )
    everything = [net("172.16.0.0/12"), net("192.168.0.0/16")]
    with pytest.raises(NetworkConflict, match="could not find an available"):
        ipam.choose_subnet([], everything)


@pytest.mark.parametrize(
    ("pool", "error", "message"),
    [
        (Pool(subnet="10.1.0.0"), SpecError, "invalid CIDR address: 10.1.0.0"),
        (Pool(subnet="10.1.0.0/33"), SpecError, "invalid CIDR address"),
        (Pool(subnet="bogus/8"), SpecError, "invalid CIDR address"),
        (Pool(subnet="10.1.0.0/16", gateway="10.1.0.0"), SpecError, "network or broadcast"),
        (Pool(subnet="10.1.0.0/16", gateway="x"), SpecError, "invalid IP address"),
        (Pool(subnet="10.9.1.0/24"), NetworkConflict, "Pool overlaps with other one"),
    ],
)
def test_check_pools_refuses_bad_input(pool: Pool, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ipam.check_pools([pool], [net("10.9.0.0/16")])


def test_check_pools_says_every_problem_in_mobys_words() -> None:
    """moby's ValidateIPAM: all of them, one a line, after ``invalid network config:``."""
    pools = [
        Pool(subnet="10.1.2.3/16", gateway="10.2.0.1", ip_range="10.0.0.0/8"),
        Pool(subnet="10.3.0.0/16", ip_range="10.4.0.0/24", aux={"h": "10.5.0.1", "v6": "fd00::1"}),
        Pool(subnet="10.6.0.0/16", gateway="fd00::1", ip_range="fd00::/64"),
    ]
    with pytest.raises(SpecError) as err:
        ipam.check_pools(pools, [])
    assert str(err.value).splitlines() == [
        "invalid network config:",
        "invalid subnet 10.1.2.3/16: it should be 10.1.0.0/16",
        "invalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.1.0.0/16",
        "invalid gateway 10.2.0.1: parent subnet 10.1.0.0/16 doesn't contain this address",
        "invalid ip-range 10.4.0.0/24: parent subnet 10.3.0.0/16 doesn't contain ip-range",
        "invalid auxiliary address h: parent subnet 10.3.0.0/16 doesn't contain this address",
        "invalid auxiliary address v6: parent subnet is an IPv4 block",
        "invalid ip-range fd00::/64: parent subnet is an IPv4 block",
        "invalid gateway fd00::1: parent subnet is an IPv4 block",
    ]


def test_check_pools_normalizes_and_defaults_the_gateway() -> None:
    out = ipam.check_pools(
        [
            Pool(subnet="10.1.0.0/16", ip_range="10.1.128.0/17", aux={"a": "10.1.0.9"}),
            Pool(subnet="fd01::/64"),
        ],
        [],
    )
    assert out == [
        Pool(
            subnet="10.1.0.0/16",
            gateway="10.1.0.1",
            ip_range="10.1.128.0/17",
            aux={"a": "10.1.0.9"},
        ),
        Pool(subnet="fd01::/64", gateway="fd01::1"),
    ]
    with pytest.raises(NetworkConflict, match="Pool overlaps"):
        ipam.check_pools([Pool(subnet="10.1.0.0/16"), Pool(subnet="10.1.5.0/24")], [])


def test_ula_subnet_is_a_random_rfc4193_64() -> None:
    a, b = ipam.ula_subnet(), ipam.ula_subnet()
    assert a.prefixlen == 64 and a.subnet_of(net("fd00::/8"))  # type: ignore[arg-type]
    assert a != b  # 40 random bits


def test_mac_from_ipv4_as_docker() -> None:
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
    assert ipam.mac_for("").startswith("02:42:")


def _network(store: NetworkStore, pool: Pool) -> Network:
    n = Network(id="n" * 64, name="n1", pools=[pool])
    with store.tx() as db:
        store.add_network(db, n)
        store.allocate(db, n.id, pool.gateway, "gateway")
    return n


def test_allocate_static_free_and_persist(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    pool = Pool(subnet="10.5.0.0/29", gateway="10.5.0.1")
    n = _network(store, pool)
    with store.tx() as db:
        got = [ipam.allocate(store, db, n.id, pool, f"c{i}") for i in range(3)]
    assert got == ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
    with store.tx() as db:
        assert ipam.allocate(store, db, n.id, pool, "s", "10.5.0.6") == "10.5.0.6"
    for wanted, error, message in [
        ("10.5.0.6", NetworkConflict, "Address already in use"),
        ("10.5.0.1", NetworkConflict, "Address already in use"),  # the gateway
        ("10.5.0.7", SpecError, "does not belong"),  # broadcast
        ("10.6.0.2", SpecError, "does not belong"),
    ]:
        with pytest.raises(error, match=message), store.tx() as db:
            ipam.allocate(store, db, n.id, pool, "x", wanted)
    with store.tx() as db:
        assert ipam.allocate(store, db, n.id, pool, "c3") == "10.5.0.5"
        with pytest.raises(NetworkConflict, match="no available IPv4 addresses"):
            ipam.allocate(store, db, n.id, pool, "c4")
    store.close()
    # a new store on the same file (a daemon restart) sees the allocations
    again = NetworkStore(tmp_path)
    with again.tx() as db:
        assert again.allocated(db, n.id)["10.5.0.3"] == "c1"
        db.execute("DELETE FROM allocations WHERE owner = 'c1'")  # an endpoint removed
        assert ipam.allocate(again, db, n.id, pool, "c5") == "10.5.0.3"


def test_a_failed_transaction_allocates_nothing(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    pool = Pool(subnet="10.5.0.0/24", gateway="10.5.0.1")
    n = _network(store, pool)
    with pytest.raises(NetworkConflict), store.tx() as db:
        ipam.allocate(store, db, n.id, pool, "a")
        ipam.allocate(store, db, n.id, pool, "b", "10.5.0.2")  # taken by "a" just now
    with store.tx() as db:
        assert store.allocated(db, n.id) == {"10.5.0.1": "gateway"}


def test_ip_range_first_address_is_used(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path)
    pool = Pool(subnet="10.7.0.0/24", gateway="10.7.0.254", ip_range="10.7.0.128/25")
    n = _network(store, pool)
    with store.tx() as db:
        assert ipam.allocate(store, db, n.id, pool, "a") == "10.7.0.128"
