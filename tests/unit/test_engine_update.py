"""``docker update``'s pure part: merging a request into a HostConfig, checks, resources."""

from __future__ import annotations

from typing import Any

import pytest

from bulkhead.engine.engine import RuntimeRefused, _runtime_words, _update_error
from bulkhead.engine.update import UpdateConflict, merge_into_spec, plan_update
from bulkhead.errors import SpecError

CID = "c" * 64
MIB = 1 << 20


def hc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "NetworkMode": "none",
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "LogConfig": {"Type": "json-file", "Config": {}},
    }
    base.update(fields)
    return base


def plan(host_config: dict[str, Any], body: Any) -> Any:
    return plan_update(CID, {"Image": "busybox"}, host_config, body)


def test_zero_fields_leave_the_host_config_as_it_is() -> None:
    p = plan(hc(Memory=64 * MIB, MemorySwap=128 * MIB, CpuShares=100), {"CpuShares": 512})
    assert p.host_config["Memory"] == 64 * MIB
    assert p.host_config["CpuShares"] == 512
    assert p.changed == ["CpuShares"]
    assert p.resources is not None
    assert p.resources["cpu"]["shares"] == 512
    assert p.resources["memory"]["limit"] == 64 * MIB  # the whole merged set is applied
    assert "devices" not in p.resources


def test_nano_cpus_become_quota_and_period() -> None:
    p = plan(hc(), {"NanoCpus": 500_000_000})
    assert p.host_config["NanoCpus"] == 500_000_000
    assert p.resources["cpu"]["quota"] == 50000
    assert p.resources["cpu"]["period"] == 100000


def test_memory_keeps_the_swap_the_container_was_created_with() -> None:
    # created with -m 64m: memory+swap is 128m (Docker's default, twice the limit)
    p = plan(hc(Memory=64 * MIB), {"Memory": 100 * MIB})
    assert p.host_config["MemorySwap"] == 128 * MIB
    assert p.resources["memory"] == {"limit": 100 * MIB, "swap": 128 * MIB}
    with pytest.raises(UpdateConflict, match="smaller than already set memoryswap limit"):
        plan(hc(Memory=64 * MIB), {"Memory": 200 * MIB})
    p = plan(hc(Memory=64 * MIB), {"Memory": 200 * MIB, "MemorySwap": -1})
    assert p.resources["memory"] == {"limit": 200 * MIB, "swap": -1}
    # another field: the stored HostConfig keeps what it had
    p = plan(hc(Memory=64 * MIB), {"CpuShares": 4})
    assert "MemorySwap" not in p.host_config
    assert p.resources["memory"] == {"limit": 64 * MIB, "swap": 128 * MIB}


def test_pids_limit_zero_or_negative_lifts_the_limit() -> None:
    for value in (0, -1, -5):
        p = plan(hc(PidsLimit=50), {"PidsLimit": value})
        assert p.host_config["PidsLimit"] == 0
        assert p.resources["pids"] == {"limit": -1}
    assert plan(hc(), {"PidsLimit": 20}).resources["pids"] == {"limit": 20}
    # absent: untouched, and not part of the request
    assert plan(hc(PidsLimit=50), {"CpuShares": 2}).host_config["PidsLimit"] == 50


def test_restart_policy_only_changes_no_resource() -> None:
    p = plan(hc(), {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
    assert p.resources is None
    assert p.host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert p.changed == ["RestartPolicy"]
    with pytest.raises(SpecError, match="invalid restart policy 'sometimes'"):
        plan(hc(), {"RestartPolicy": {"Name": "sometimes"}})
    with pytest.raises(SpecError, match="only be used with 'on-failure'"):
        plan(hc(), {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}})
    with pytest.raises(UpdateConflict, match="AutoRemove is enabled"):
        plan(hc(AutoRemove=True), {"RestartPolicy": {"Name": "always"}})
    assert plan(hc(AutoRemove=True), {"RestartPolicy": {"Name": "no"}}).resources is None


@pytest.mark.parametrize(
    ("current", "body", "words"),
    [
        ({"CpuQuota": 30000}, {"NanoCpus": 10**9}, "Nano CPUs cannot be updated as CPU Quota"),
        ({"CpuPeriod": 50000}, {"NanoCpus": 10**9}, "Nano CPUs cannot be updated as CPU Period"),
        ({"NanoCpus": 10**9}, {"CpuQuota": 20000}, "CPU Quota cannot be updated as NanoCPUs"),
        ({"NanoCpus": 10**9}, {"CpuPeriod": 20000}, "CPU Period cannot be updated as NanoCPUs"),
    ],
)
def test_nano_cpus_and_cfs_fields_conflict(
    current: dict[str, Any], body: dict[str, Any], words: str
) -> None:
    with pytest.raises(UpdateConflict, match=words) as err:
        plan(hc(**current), body)
    assert str(err.value).startswith(f"Cannot update container {CID}: Conflicting options")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Memory": 1 * MIB}, "Minimum memory limit allowed is 6MB"),
        ({"Memory": 64 * MIB, "MemorySwap": 32 * MIB}, "memoryswap limit should be larger"),
        ({"NanoCpus": 10**9, "CpuQuota": 50000}, "Nano CPUs and CPU Quota cannot both be set"),
        ({"CpuQuota": 500}, "CPU cfs quota can not be less than 1ms"),
        ({"CpuPeriod": 10}, "CPU cfs period can not be less than 1ms"),
        ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
        ({"CpusetCpus": "4096"}, "HostConfig.CpusetCpus"),
        ({"Memory": "lots"}, "invalid Memory: expected an integer"),
        ({"CpusetMems": 3}, "invalid CpusetMems: expected a string"),
        ([], "a ContainerUpdateRequest object is required"),
    ],
)
def test_bad_values_are_400s_naming_the_field(body: Any, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        plan(hc(), body)


def test_a_plan_does_not_touch_the_stored_host_config() -> None:
    stored = hc(Memory=64 * MIB, RestartPolicy={"Name": "no", "MaximumRetryCount": 0})
    plan(stored, {"Memory": 80 * MIB, "RestartPolicy": {"Name": "always"}})
    assert stored["Memory"] == 64 * MIB
    assert "MemorySwap" not in stored
    assert stored["RestartPolicy"]["Name"] == "no"


def test_merge_into_spec_keeps_devices_and_the_rest() -> None:
    spec: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "linux": {
            "cgroupsPath": "/bulkhead/x",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": 64 * MIB, "swap": 128 * MIB},
                "pids": {"limit": 50},
                "hugepageLimits": [],
            },
        },
    }
    out = merge_into_spec(spec, {"memory": {"limit": 80 * MIB}, "pids": {"limit": -1}})
    res = out["linux"]["resources"]
    assert res["devices"] == [{"allow": False, "access": "rwm"}]
    assert res["memory"] == {"limit": 80 * MIB}
    assert "pids" not in res  # lifted: a fresh cgroup has no limit
    assert res["hugepageLimits"] == []
    assert out["linux"]["cgroupsPath"] == "/bulkhead/x"
    assert spec["linux"]["resources"]["pids"] == {"limit": 50}  # the input is left alone


def test_runtime_refusals_map_to_409_when_busy_else_400() -> None:
    busy = RuntimeRefused(CID, "update", "unable to set memory limit to 8388608 (current usage: 9)")
    assert isinstance(_update_error(CID, busy), UpdateConflict)
    cause = OSError(16, "Device or resource busy")
    wrapped = RuntimeRefused(CID, "update", "linux.resources.memory.limit: refused")
    wrapped.__cause__ = cause
    assert isinstance(_update_error(CID, wrapped), UpdateConflict)
    other = _update_error(CID, RuntimeRefused(CID, "update", "cpuset: no CPU 9"))
    assert isinstance(other, SpecError) and not isinstance(other, UpdateConflict)
    assert str(other) == f"Cannot update container {CID}: cpuset: no CPU 9"


def test_runtime_words_take_runcs_msg() -> None:
    line = 'time="2026-11-30T10:00:00Z" level=error msg="container \\"x\\" does not exist"'
    assert _runtime_words(line) == 'container "x" does not exist'
    assert _runtime_words("plain words") == "plain words"
