"""Container stats and top without a kernel: Docker's JSON from fake cgroup Stats, the CLI's math.

The conversions follow moby's ``daemon/stats_unix.go`` (v1 and v2), the
arithmetic the docker CLI's ``stats_helpers.go``; ``parse_ps_output`` moby's
``daemon/top_unix.go``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bulkhead.cgroups.stats import (
    UNLIMITED,
    Blkio,
    BlkioEntry,
    Cpu,
    CpuUsage,
    Memory,
    MemoryEntry,
    Pids,
    Stats,
    Throttling,
)
from bulkhead.cli import stats as cli_stats
from bulkhead.engine import stats as st
from bulkhead.engine import top

GIB = 1024**3

PROC_STAT = """\
cpu  1532272 3 879558 3661287 39278 5 10452 2560 0 0
cpu0 705586 0 403530 1939113 10104 0 1158 1273 0 0
cpu1 826685 3 476028 1722174 29173 5 9294 1286 0 0
intr 123 4 5
ctxt 99
"""

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0:    5338      36    1    2    0     0          0         0      648       8    3    4    0     0       0          0
"""


def v1_stats() -> Stats:
    return Stats(
        cpu=Cpu(
            usage=CpuUsage(total=3_000, percpu=[1_000, 2_000], kernel=500, user=2_500),
            throttling=Throttling(periods=10, throttled_periods=4, throttled_time=77),
        ),
        memory=Memory(
            cache=4096,
            usage=MemoryEntry(usage=10 * 4096, max=20 * 4096, limit=(2**63 - 4096), failcnt=2),
            raw={"cache": 4096, "rss": 8192, "total_inactive_file": 4096, "extra_key": 5},
        ),
        pids=Pids(current=3, limit=0),
        blkio=Blkio(
            io_service_bytes_recursive=[
                BlkioEntry(major=8, minor=0, op="Read", value=100),
                BlkioEntry(major=8, minor=0, op="Write", value=50),
                BlkioEntry(major=8, minor=0, op="Total", value=150),
            ],
            io_serviced_recursive=[BlkioEntry(major=8, minor=0, op="Read", value=2)],
        ),
    )


def v2_stats() -> Stats:
    return Stats(
        cpu=Cpu(usage=CpuUsage(total=9_000, kernel=1_000, user=8_000)),
        memory=Memory(
            usage=MemoryEntry(usage=50 * 4096, max=60 * 4096, limit=64 * 1024 * 1024, failcnt=9),
            raw={"anon": 8192, "file": 4096, "inactive_file": 4096, "kernel": 1},
        ),
        pids=Pids(current=2, limit=100),
        blkio=Blkio(
            io_service_bytes_recursive=[
                BlkioEntry(major=254, minor=0, op="Read", value=7),
                BlkioEntry(major=254, minor=0, op="Write", value=9),
            ],
            io_serviced_recursive=[BlkioEntry(major=254, minor=0, op="Read", value=1)],
        ),
    )


def response(stats: Stats, version: int, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "/web",
        "container_id": "c" * 64,
        "read_ns": 1_700_000_000_123_456_000,
        "stats": stats,
        "version": version,
        "system_usage": 1_000_000,
        "online_cpus": 2,
        "host_memory": 24 * GIB,
        "networks": None,
    }
    args.update(kw)
    return st.stats_response(**args)


# --- the host's numbers ------------------------------------------------------------


def test_proc_stat_sums_seven_fields_in_ns_and_counts_cpus() -> None:
    usage, cpus = st.parse_proc_stat(PROC_STAT)
    ticks = 1532272 + 3 + 879558 + 3661287 + 39278 + 5 + 10452  # steal (2560) left out
    assert usage == ticks * 10_000_000  # 1 tick = 10 ms
    assert cpus == 2


def test_proc_stat_refuses_a_short_cpu_line() -> None:
    with pytest.raises(ValueError):
        st.parse_proc_stat("cpu  1 2 3\n")


def test_net_dev_per_interface_without_loopback() -> None:
    assert st.parse_net_dev(NET_DEV) == {
        "eth0": {
            "rx_bytes": 5338,
            "rx_packets": 36,
            "rx_errors": 1,
            "rx_dropped": 2,
            "tx_bytes": 648,
            "tx_packets": 8,
            "tx_errors": 3,
            "tx_dropped": 4,
        }
    }


def test_meminfo_total_in_bytes() -> None:
    assert st.parse_meminfo_total("MemFree: 1 kB\nMemTotal:  24683652 kB\n") == 24683652 * 1024
    assert st.parse_meminfo_total("") == 0


def test_rfc3339_nano_trims_zeros_like_go() -> None:
    assert st.rfc3339_nano(1_700_000_000_123_456_000) == "2023-11-14T22:13:20.123456Z"
    assert st.rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert st.rfc3339_nano(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


# --- Docker's document ------------------------------------------------------------------


def test_v1_conversion() -> None:
    doc = response(v1_stats(), 1)
    assert doc["name"] == "/web" and doc["id"] == "c" * 64 and doc["os_type"] == "linux"
    assert doc["read"] == "2023-11-14T22:13:20.123456Z"
    assert doc["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 3_000,
            "percpu_usage": [1_000, 2_000],
            "usage_in_kernelmode": 500,
            "usage_in_usermode": 2_500,
        },
        "system_cpu_usage": 1_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 10, "throttled_periods": 4, "throttled_time": 77},
    }
    mem = doc["memory_stats"]
    assert mem["usage"] == 40960 and mem["max_usage"] == 81920 and mem["failcnt"] == 2
    assert mem["limit"] == 24 * GIB  # unlimited (page-rounded LONG_MAX): the host's memory
    assert list(mem["stats"]) == list(st.V1_MEMORY_KEYS)  # moby's keys, no others
    assert mem["stats"]["rss"] == 8192 and mem["stats"]["total_inactive_file"] == 4096
    assert mem["stats"]["total_rss"] == 0
    assert doc["pids_stats"] == {"current": 3}  # no limit: omitted
    blk = doc["blkio_stats"]
    assert list(blk) == list(st.BLKIO_KEYS)
    assert blk["io_service_bytes_recursive"][0] == {
        "major": 8,
        "minor": 0,
        "op": "Read",
        "value": 100,
    }
    assert blk["io_serviced_recursive"] == [{"major": 8, "minor": 0, "op": "Read", "value": 2}]
    assert blk["sectors_recursive"] == []  # v1: empty lists, as moby's copyBlkioEntry
    assert "networks" not in doc
    assert doc["num_procs"] == 0 and doc["storage_stats"] == {}
    assert doc["preread"] == st.ZERO_TIME and doc["precpu_stats"] == st.empty_cpu_stats()


def test_v2_conversion() -> None:
    doc = response(v2_stats(), 2, oom_events=3)
    cpu = doc["cpu_stats"]["cpu_usage"]
    assert cpu == {"total_usage": 9_000, "usage_in_kernelmode": 1_000, "usage_in_usermode": 8_000}
    mem = doc["memory_stats"]
    assert mem["usage"] == 50 * 4096
    assert mem["limit"] == 64 * 1024 * 1024  # a real limit stays
    assert "max_usage" not in mem  # not on v2 (moby)
    assert mem["failcnt"] == 3  # memory.events oom, not memory.events max
    assert list(mem["stats"]) == list(st.V2_MEMORY_KEYS)
    assert mem["stats"]["inactive_file"] == 4096 and "kernel" not in mem["stats"]
    assert doc["pids_stats"] == {"current": 2, "limit": 100}
    blk = doc["blkio_stats"]
    assert blk["io_service_bytes_recursive"] == [
        {"major": 254, "minor": 0, "op": "read", "value": 7},
        {"major": 254, "minor": 0, "op": "write", "value": 9},
    ]
    assert all(blk[k] is None for k in st.BLKIO_KEYS[1:])  # v2: bytes only


def test_v2_unlimited_memory_reads_as_host_memory_and_no_io_is_null() -> None:
    stats = v2_stats()
    stats.memory.usage.limit = UNLIMITED
    stats.blkio = Blkio()
    doc = response(stats, 2)
    assert doc["memory_stats"]["limit"] == 24 * GIB
    assert "failcnt" not in doc["memory_stats"]
    assert doc["blkio_stats"] == dict.fromkeys(st.BLKIO_KEYS)


def test_networks_present_only_with_interfaces() -> None:
    nets = st.parse_net_dev(NET_DEV)
    assert response(v1_stats(), 1, networks=nets)["networks"] == nets
    assert "networks" not in response(v1_stats(), 1, networks={})


def test_empty_stats_of_a_stopped_container() -> None:
    doc = st.empty_stats("/web", "c" * 64)
    assert doc["name"] == "/web" and doc["id"] == "c" * 64
    assert doc["read"] == doc["preread"] == "0001-01-01T00:00:00Z"
    assert doc["memory_stats"] == {} and doc["pids_stats"] == {}
    assert doc["cpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert cli_stats.cpu_percent(doc) == 0.0


def test_chain_sets_the_previous_sample() -> None:
    first = response(v1_stats(), 1)
    second = response(v1_stats(), 1, read_ns=1_700_000_001_000_000_000)
    st.chain(second, first)
    assert second["preread"] == first["read"]
    assert second["precpu_stats"] == first["cpu_stats"]
    third = response(v1_stats(), 1)
    st.chain(third, st.empty_stats("/web", "c" * 64))  # nothing measured before
    assert third["preread"] == st.ZERO_TIME


# --- the CLI's arithmetic -------------------------------------------------------------------


def pair(cpu_delta: int, system_delta: int, cpus: int, *, percpu: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": 10_000 + cpu_delta}
    if percpu:
        usage["percpu_usage"] = [1] * percpu
    cpu: dict[str, Any] = {"cpu_usage": usage, "system_cpu_usage": 10**9 + system_delta}
    if cpus:
        cpu["online_cpus"] = cpus
    return {
        "cpu_stats": cpu,
        "precpu_stats": {"cpu_usage": {"total_usage": 10_000}, "system_cpu_usage": 10**9},
    }


def test_cpu_percent_half_a_cpu_on_two() -> None:
    # one second: the host ran 2 s of CPU time (2 CPUs), the container 0.5 s
    doc = pair(500_000_000, 2_000_000_000, 2)
    assert cli_stats.cpu_percent(doc) == pytest.approx(50.0)
    assert st.cpu_percent(doc) == pytest.approx(50.0)


def test_cpu_percent_falls_back_to_percpu_length_and_guards_zero() -> None:
    assert cli_stats.cpu_percent(pair(1_000_000_000, 4_000_000_000, 0, percpu=4)) == (
        pytest.approx(100.0)
    )
    assert cli_stats.cpu_percent(pair(5, 0, 2)) == 0.0  # no host time passed
    assert cli_stats.cpu_percent(pair(0, 10, 2)) == 0.0


def test_cpu_percent_of_real_samples_from_the_sampler_math() -> None:
    first = response(v1_stats(), 1, system_usage=4_000_000_000)
    later = v1_stats()
    later.cpu.usage.total += 1_000_000_000  # one CPU-second more
    second = st.chain(response(later, 1, system_usage=8_000_000_000), first)
    assert cli_stats.cpu_percent(second) == pytest.approx(50.0)


def test_memory_usage_without_cache_v1_and_v2() -> None:
    v1 = {"usage": 10_000, "stats": {"total_inactive_file": 4_000, "inactive_file": 1}}
    assert cli_stats.mem_usage_no_cache(v1) == 6_000
    v2 = {"usage": 10_000, "stats": {"inactive_file": 3_000}}
    assert cli_stats.mem_usage_no_cache(v2) == 7_000
    assert cli_stats.mem_usage_no_cache({"usage": 10, "stats": {"inactive_file": 30}}) == 10
    assert cli_stats.mem_usage_no_cache({}) == 0


def test_block_and_network_io() -> None:
    blk = response(v1_stats(), 1)["blkio_stats"]
    assert cli_stats.block_io(blk) == (100, 50)  # Total is neither
    assert cli_stats.block_io(response(v2_stats(), 2)["blkio_stats"]) == (7, 9)
    assert cli_stats.network_io(st.parse_net_dev(NET_DEV)) == (5338, 648)
    assert cli_stats.network_io(None) == (0, 0)


def test_bytes_size_is_go_units_binary() -> None:
    assert cli_stats.bytes_size(0) == "0B"
    assert cli_stats.bytes_size(274432) == "268KiB"
    assert cli_stats.bytes_size(64 * 1024 * 1024) == "64MiB"
    assert cli_stats.bytes_size(24683652 * 1024) == "23.54GiB"
    assert cli_stats.bytes_size(1023) == "1023B"


def test_entry_context_is_dockers_row() -> None:
    doc = st.chain(
        response(v1_stats(), 1, networks=st.parse_net_dev(NET_DEV)), response(v1_stats(), 1)
    )
    doc["memory_stats"]["limit"] = 64 * 1024 * 1024
    e = cli_stats.Entry("web")
    e.update(doc)
    ctx = e.context(trunc=True)
    assert ctx == {
        "BlockIO": "100B / 50B",
        "CPUPerc": "0.00%",
        "Container": "web",
        "ID": "c" * 12,
        "MemPerc": "0.05%",
        "MemUsage": "36KiB / 64MiB",
        "Name": "web",
        "NetIO": "5.34kB / 648B",
        "PIDs": "3",
    }
    assert list(ctx) == sorted(ctx)  # {{json .}} prints them sorted, as docker
    assert e.context(trunc=False)["ID"] == "c" * 64
    gone = cli_stats.Entry("web")
    assert gone.context(True)["CPUPerc"] == "--" and gone.context(True)["Name"] == "--"


# --- top ---------------------------------------------------------------------------------

PS_EF = """\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root        4242    4230  0 10:01 ?        00:00:00 sh -c sleep 60;  echo  done
root        4243    4242  0 10:01 ?        00:00:00 sleep 60
"""


def test_parse_ps_keeps_the_containers_rows_and_joins_the_command() -> None:
    out = top.parse_ps_output(PS_EF, {4242, 4243})
    assert out["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert out["Processes"] == [
        ["root", "4242", "4230", "0", "10:01", "?", "00:00:00", "sh -c sleep 60; echo done"],
        ["root", "4243", "4242", "0", "10:01", "?", "00:00:00", "sleep 60"],
    ]


def test_parse_ps_thread_rows_follow_their_process() -> None:
    output = "PID TID CMD\n4242 - sh\n- 4242 -\n1 - init\n- 1 -\n"
    out = top.parse_ps_output(output, {4242})
    assert out["Processes"] == [["4242", "-", "sh"], ["-", "4242", "-"]]


def test_parse_ps_errors() -> None:
    with pytest.raises(top.TopError, match="Couldn't find PID field"):
        top.parse_ps_output("USER CMD\nroot x\n", {1})
    with pytest.raises(top.TopError, match="Unexpected pid 'x'"):
        top.parse_ps_output("PID CMD\nx sh\n", {1})


def test_ps_args_checks_and_argv() -> None:
    top.validate_ps_args("-ef")
    top.validate_ps_args("-o pid=PID,comm")  # naming the pid column PID is fine
    with pytest.raises(ValueError, match='specifying "user=PID" is not allowed'):
        top.validate_ps_args("-o user=PID")
    assert top.ps_argv("aux", [1, 2]) == ["ps", "aux", "-q1,2"]
    assert top.ps_argv("-o pid,comm", None) == ["ps", "-o", "pid,comm"]
