"""bulkhead.oci.runtime_spec: config.json models, loading and validation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bulkhead.errors import SpecError
from bulkhead.oci import runtime_spec as rs
from bulkhead.oci.defaults import default_spec
from bulkhead.oci.runtime_spec import (
    Spec,
    check_oci_version,
    decode_spec,
    encode_spec,
    load_spec,
    validate_spec,
)


def roundtrip(doc: dict[str, Any]) -> tuple[Spec, Any]:
    spec = decode_spec(json.dumps(doc).encode())
    return spec, json.loads(encode_spec(spec))


# A configuration that sets every member runtime-spec 1.0-1.3 defines, so a
# misspelt JSON name shows up as a difference after the round trip.
RICH: dict[str, Any] = {
    "ociVersion": "1.2.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 25, "width": 80},
        "user": {
            "uid": 1000,
            "gid": 1000,
            "umask": 18,
            "additionalGids": [5, 6],
            "username": "someone",
        },
        "args": ["sh", "-c", "true"],
        "commandLine": "cmd.exe /c true",
        "env": ["PATH=/bin", "TERM=xterm", "EMPTY="],
        "cwd": "/work",
        "capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL"],
            "ambient": ["CAP_KILL"],
        },
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024},
            {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0},
        ],
        "noNewPrivileges": True,
        "apparmorProfile": "docker-default",
        "oomScoreAdj": -500,
        "scheduler": {
            "policy": "SCHED_DEADLINE",
            "nice": 0,
            "priority": 0,
            "flags": ["SCHED_FLAG_RESET_ON_FORK"],
            "runtime": 10000000,
            "deadline": 20000000,
            "period": 30000000,
        },
        "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "execCPUAffinity": {"initial": "0", "final": "0-3,7"},
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "rich",
    "domainname": "example.org",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/data",
            "type": "bind",
            "source": "/srv/data",
            "options": ["rbind", "rw"],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        },
    ],
    "hooks": {
        "prestart": [{"path": "/usr/bin/prestart"}],
        "createRuntime": [
            {"path": "/usr/bin/hook", "args": ["hook", "create"], "env": ["A=1"], "timeout": 5}
        ],
        "createContainer": [{"path": "/bin/true"}],
        "startContainer": [{"path": "/bin/true"}],
        "poststart": [{"path": "/bin/true"}],
        "poststop": [{"path": "/bin/true", "timeout": 1}],
    },
    "annotations": {"org.example.key": "value", "com.example.empty": ""},
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "sysctl": {
            "net.ipv4.ip_forward": "1",
            "kernel.shmmax": "4096",
            "fs.mqueue.msg_max": "10",
            "kernel.domainname": "example.org",
        },
        "resources": {
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            ],
            "memory": {
                "limit": 536870912,
                "reservation": 268435456,
                "swap": -1,
                "kernel": -1,
                "kernelTCP": -1,
                "swappiness": 0,
                "disableOOMKiller": False,
                "useHierarchy": True,
                "checkBeforeUpdate": True,
            },
            "cpu": {
                "shares": 1024,
                "quota": 100000,
                "burst": 10000,
                "period": 100000,
                "realtimeRuntime": 950000,
                "realtimePeriod": 1000000,
                "cpus": "0-3,7",
                "mems": "0",
                "idle": 0,
            },
            "pids": {"limit": 32771},
            "blockIO": {
                "weight": 10,
                "leafWeight": 10,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 700}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 80}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"io.max": "259:0 rbps=2097152", "memory.high": "max"},
        },
        "cgroupsPath": "/bulkhead/rich",
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "user"},
            {"type": "cgroup"},
            {"type": "time"},
        ],
        "devices": [
            {
                "path": "/dev/fuse",
                "type": "c",
                "major": 10,
                "minor": 229,
                "fileMode": 438,
                "uid": 0,
                "gid": 0,
            },
            {"path": "/dev/myfifo", "type": "p"},
        ],
        "netDevices": {"eth1": {"name": "container_eth1"}, "eth2": {}},
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "MKNOD=/dev/null",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mknod"], "action": "SCMP_ACT_NOTIFY"},
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}],
                },
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ],
        },
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:container_file_t:s0:c1,c2",
        "intelRdt": {
            "closID": "guaranteed_group",
            "schemata": ["L3:0=7f0;1=1f", "MB:0=20;1=70"],
            "l3CacheSchema": "L3:0=7f0;1=1f",
            "memBwSchema": "MB:0=20;1=70",
            "enableCMT": True,
            "enableMBM": True,
            "enableMonitoring": True,
        },
        "memoryPolicy": {
            "mode": "MPOL_INTERLEAVE",
            "nodes": "0-1",
            "flags": ["MPOL_F_STATIC_NODES"],
        },
        "personality": {"domain": "LINUX32"},
        "timeOffsets": {
            "monotonic": {"secs": 86400, "nanosecs": 500},
            "boottime": {"secs": -3600},
        },
    },
}

# Members of the other platforms, to show they survive a round trip too.
OTHER_PLATFORMS: dict[str, Any] = {
    "solaris": {
        "milestone": "svc:/milestone/container:default",
        "limitpriv": "default",
        "maxShmMemory": "512m",
        "anet": [
            {
                "linkname": "net0",
                "lowerLink": "net2",
                "allowedAddress": "172.17.0.2/16",
                "configureAllowedAddress": "true",
                "defrouter": "172.17.0.1/16",
                "linkProtection": "mac-nospoof",
                "macAddress": "02:42:f8:52:c7:16",
            }
        ],
        "cappedCPU": {"ncpus": "8"},
        "cappedMemory": {"physical": "512m", "swap": "512m"},
    },
    "windows": {
        "layerFolders": ["C:\\layers\\1"],
        "devices": [{"id": "24E552D7-6523-47F7-A647-D3465BF1F5CA", "idType": "class"}],
        "resources": {
            "memory": {"limit": 2097152},
            "cpu": {
                "count": 2,
                "shares": 256,
                "maximum": 5000,
                "affinity": [{"mask": 3, "group": 0}],
            },
            "storage": {"iops": 50, "bps": 1000, "sandboxSize": 10},
        },
        "credentialSpec": {"any": ["json", 1]},
        "servicing": True,
        "ignoreFlushesDuringBoot": True,
        "hyperv": {"utilityVMPath": "C:\\uvm"},
        "network": {
            "endpointList": ["7a010682-17e0-4455-a838-02e5d9655fe6"],
            "allowUnqualifiedDNSQuery": True,
            "DNSSearchList": ["a.com"],
            "networkSharedContainerName": "other",
            "networkNamespace": "ns",
        },
    },
    "vm": {
        "hypervisor": {"path": "/usr/bin/qemu", "parameters": ["-x"]},
        "kernel": {"path": "/vmlinuz", "parameters": ["console=ttyS0"], "initrd": "/initrd"},
        "image": {"path": "/img.qcow2", "format": "qcow2"},
        "hwconfig": {
            "deviceTree": "/dt",
            "vcpus": 2,
            "memory": 1024,
            "dtdevs": ["/soc/x"],
            "iomems": [{"firstGFN": 1, "firstMFN": 2, "nrMFNs": 3}],
            "irqs": [42],
        },
    },
    "zos": {
        "devices": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 2, "fileMode": 420}],
        "namespaces": [{"type": "pid", "path": "/x"}],
    },
    "freebsd": {
        "devices": [{"path": "null", "mode": 438}],
        "jail": {
            "parent": "p",
            "host": "new",
            "ip4": "inherit",
            "ip4Addr": ["10.0.0.2"],
            "ip6": "disable",
            "ip6Addr": ["::1"],
            "vnet": "new",
            "interface": "em0",
            "vnetInterfaces": ["epair0b"],
            "sysvmsg": "new",
            "sysvsem": "new",
            "sysvshm": "new",
            "enforceStatfs": 2,
            "allow": {
                "setHostname": True,
                "rawSockets": True,
                "chflags": True,
                "mount": ["tmpfs"],
                "quotas": True,
                "socketAf": True,
                "mlock": True,
                "reservedPorts": True,
                "suser": True,
            },
        },
    },
}


def rich() -> dict[str, Any]:
    return copy.deepcopy(RICH)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("rootless", [False, True])
def test_runc_spec_default_round_trips_and_validates(rootless: bool) -> None:
    doc = default_spec(rootless=rootless)
    spec, again = roundtrip(doc)
    assert again == doc
    assert validate_spec(spec) == []
    assert spec.process is not None
    assert spec.process.no_new_privileges is True
    assert spec.process.user.uid == 0
    assert spec.linux is not None
    kinds = [ns.type for ns in spec.linux.namespaces or []]
    assert ("user" in kinds) is rootless
    assert ("network" in kinds) is not rootless


def test_rich_config_round_trips_every_member() -> None:
    doc = rich()
    spec, again = roundtrip(doc)
    assert again == doc
    assert validate_spec(spec) == []


def test_rich_config_attribute_names() -> None:
    spec, _ = roundtrip(rich())
    proc, linux = spec.process, spec.linux
    assert proc is not None and linux is not None and linux.resources is not None
    assert proc.user.additional_gids == [5, 6]
    assert proc.io_priority is not None and proc.io_priority.class_ == "IOPRIO_CLASS_BE"
    assert proc.exec_cpu_affinity is not None and proc.exec_cpu_affinity.final == "0-3,7"
    assert proc.rlimits is not None and proc.rlimits[1].hard == 2**64 - 1
    assert proc.oom_score_adj == -500
    assert linux.uid_mappings is not None
    assert (linux.uid_mappings[0].container_id, linux.uid_mappings[0].host_id) == (0, 100000)
    res = linux.resources
    assert res.memory is not None and res.memory.swap == -1
    assert res.memory.kernel_tcp == -1 and res.memory.disable_oom_killer is False
    assert res.block_io is not None and res.block_io.throttle_read_iops_device is not None
    assert res.block_io.throttle_read_iops_device[0].rate == 80
    assert res.block_io.weight_device is not None
    assert res.block_io.weight_device[0].major == 8
    assert res.network is not None and res.network.class_id == 1048577
    assert res.hugepage_limits is not None and res.hugepage_limits[0].page_size == "2MB"
    assert linux.seccomp is not None and linux.seccomp.default_errno_ret == 1
    assert linux.seccomp.syscalls is not None
    assert linux.seccomp.syscalls[2].args is not None
    assert linux.seccomp.syscalls[2].args[0].value_two == 8
    assert linux.seccomp.syscalls[3].errno_ret == 38
    assert linux.intel_rdt is not None and linux.intel_rdt.clos_id == "guaranteed_group"
    assert linux.net_devices is not None and linux.net_devices["eth1"].name == "container_eth1"
    assert linux.time_offsets is not None and linux.time_offsets["boottime"].secs == -3600
    assert spec.hooks is not None and spec.hooks.create_runtime is not None
    assert spec.hooks.create_runtime[0].timeout == 5


def test_other_platforms_round_trip() -> None:
    doc = {"ociVersion": "1.3.0", **copy.deepcopy(OTHER_PLATFORMS)}
    spec, again = roundtrip(doc)
    assert again == doc
    windows = rs.platform_section(spec, rs.Windows)
    assert windows is not None and windows.credential_spec == {"any": ["json", 1]}
    vm = rs.platform_section(spec, rs.VM)
    assert vm is not None and vm.hwconfig is not None


def test_other_platform_sections_are_checked_with_their_path() -> None:
    doc = {"ociVersion": "1.2.0", "windows": {"layerFolders": [1]}}
    with pytest.raises(SpecError) as info:
        rs.decode_spec(json.dumps(doc).encode())
    assert "$.windows.layerFolders[0]" in str(info.value)


def test_explicit_false_and_empty_values_survive() -> None:
    doc = {
        "ociVersion": "1.0.0",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["x"], "cwd": "/"},
        "hostname": "",
        "mounts": [],
        "annotations": {},
    }
    _, again = roundtrip(doc)
    assert again == doc


def test_nothing_is_invented() -> None:
    doc = {"ociVersion": "1.0.0"}
    spec, again = roundtrip(doc)
    assert again == doc
    assert spec.process is None and spec.linux is None and spec.mounts is None


def test_unknown_fields_are_ignored() -> None:
    doc = default_spec()
    doc["somethingNew"] = {"a": 1}
    doc["process"]["futureKnob"] = [1, 2]
    doc["linux"]["namespaces"][0]["flavour"] = "x"
    spec, again = roundtrip(doc)
    assert "somethingNew" not in again
    assert "futureKnob" not in again["process"]
    assert again == default_spec()
    assert spec.linux is not None


def test_pids_limit_is_optional_since_1_3() -> None:
    spec, again = roundtrip({"ociVersion": "1.3.0", "linux": {"resources": {"pids": {}}}})
    assert spec.linux is not None and spec.linux.resources is not None
    assert spec.linux.resources.pids is not None
    assert spec.linux.resources.pids.limit is None
    assert again == {"ociVersion": "1.3.0", "linux": {"resources": {"pids": {}}}}


def test_encode_spec_of_built_spec() -> None:
    spec = Spec(
        oci_version="1.2.0",
        process=rs.Process(user=rs.User(uid=0, gid=0), args=["true"], cwd="/"),
        linux=rs.Linux(
            uid_mappings=[rs.LinuxIDMapping(container_id=0, host_id=1000, size=1)],
            resources=rs.LinuxResources(
                memory=rs.LinuxMemory(kernel_tcp=1, disable_oom_killer=True),
                block_io=rs.LinuxBlockIO(
                    throttle_write_iops_device=[rs.LinuxThrottleDevice(major=1, minor=2, rate=3)]
                ),
            ),
        ),
    )
    assert json.loads(encode_spec(spec)) == {
        "ociVersion": "1.2.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "resources": {
                "memory": {"kernelTCP": 1, "disableOOMKiller": True},
                "blockIO": {"throttleWriteIOPSDevice": [{"major": 1, "minor": 2, "rate": 3}]},
            },
        },
    }


# --------------------------------------------------------------------------- decode errors


def decode_error(doc: Any, source: str = "config.json") -> str:
    with pytest.raises(SpecError) as info:
        decode_spec(json.dumps(doc).encode(), source)
    return str(info.value)


def test_wrong_type_names_file_and_json_path() -> None:
    doc = default_spec()
    doc["process"]["user"]["uid"] = "0"
    msg = decode_error(doc, "/b/config.json")
    assert msg.startswith("/b/config.json: ")
    assert "$.process.user.uid" in msg
    assert "Expected `int`, got `str`" in msg


def test_wrong_type_inside_a_list() -> None:
    doc = default_spec()
    doc["linux"]["namespaces"][3]["type"] = 7
    assert "$.linux.namespaces[3].type" in decode_error(doc)


def test_out_of_range_number_is_refused() -> None:
    doc = default_spec()
    doc["process"]["user"]["gid"] = -1
    msg = decode_error(doc)
    assert "$.process.user.gid" in msg and ">= 0" in msg
    doc = default_spec()
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 2**32, "size": 1}]
    assert "$.linux.uidMappings[0].hostID" in decode_error(doc)


def test_missing_required_member() -> None:
    doc = default_spec()
    del doc["process"]["cwd"]
    msg = decode_error(doc)
    assert "cwd" in msg and "$.process" in msg
    assert "ociVersion" in decode_error({"process": None})


def test_invalid_json_names_the_file() -> None:
    with pytest.raises(SpecError) as info:
        decode_spec(b'{"ociVersion": "1.0.0",', "bundle/config.json")
    assert str(info.value).startswith("bundle/config.json: invalid JSON")


def test_not_an_object() -> None:
    assert "Expected `object`" in decode_error([1, 2])


def test_load_spec_reads_file_and_bundle_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(default_spec()))
    assert load_spec(tmp_path / "config.json") == load_spec(tmp_path)
    assert load_spec(str(tmp_path)).oci_version == "1.2.0"


def test_load_spec_missing_config(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "config.json")
    assert f"bundle {tmp_path} has no config.json" in str(info.value)
    with pytest.raises(SpecError, match=r"has no config\.json"):
        load_spec(tmp_path)


def test_load_spec_bad_content_names_path(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{nope")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: invalid JSON")


# --------------------------------------------------------------------------- ociVersion


@pytest.mark.parametrize(
    "version", ["1.0.0", "1.0.2-dev", "1.1.0-rc.1", "1.2.0+dev", "1.2.1", "1.3.0", "1.9.12"]
)
def test_versions_accepted(version: str) -> None:
    doc = default_spec()
    doc["ociVersion"] = version
    assert decode_spec(json.dumps(doc).encode()).oci_version == version


@pytest.mark.parametrize("version", ["2.0.0", "0.1.0", "0.6.0-dev"])
def test_other_major_versions_refused(version: str) -> None:
    msg = decode_error({"ociVersion": version})
    assert f"unsupported ociVersion {version!r}" in msg
    assert "$.ociVersion" in msg


@pytest.mark.parametrize("version", ["", "1", "1.0", "v1.0.0", "latest", "1.0.0.0", "1.x.0"])
def test_unparsable_versions_refused(version: str) -> None:
    msg = decode_error({"ociVersion": version})
    assert f"ociVersion {version!r} is not a version" in msg


def test_check_oci_version_returns_parts() -> None:
    assert check_oci_version("1.2.3-rc1+build") == (1, 2, 3)


# --------------------------------------------------------------------------- validation

Mutation = Callable[[dict[str, Any]], None]


def base() -> dict[str, Any]:
    """A valid configuration (runc spec's, plus uts) that each case breaks once."""
    return default_spec()


def invalid(mutate: Mutation, where: str, text: str, doc: dict[str, Any] | None = None) -> None:
    doc = base() if doc is None else doc
    mutate(doc)
    spec = decode_spec(json.dumps(doc).encode())
    with pytest.raises(SpecError) as info:
        validate_spec(spec)
    assert info.value.where == where
    assert text in str(info.value)


def valid(mutate: Mutation, doc: dict[str, Any] | None = None) -> list[str]:
    doc = base() if doc is None else doc
    mutate(doc)
    return validate_spec(decode_spec(json.dumps(doc).encode()))


def set_in(path: str, value: Any) -> Mutation:
    """A mutation setting the member at a dotted path (numbers index lists)."""

    def mutate(doc: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = doc
        for k in keys[:-1]:
            if isinstance(target, dict) and k not in target:
                target[k] = {}
            target = target[k]
        target[keys[-1]] = value

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


def userns(doc: dict[str, Any]) -> None:
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]


def test_base_is_valid() -> None:
    assert valid(lambda d: None) == []
    assert valid(userns) == []


CASES: list[tuple[str, Mutation, str, str]] = [
    # process
    ("args empty", set_in("process.args", []), "$.process.args", "args must not be empty"),
    ("args missing", lambda d: d["process"].pop("args"), "$.process.args", "must not be empty"),
    ("arg NUL", set_in("process.args", ["sh", "a\x00b"]), "$.process.args[1]", "NUL"),
    ("cwd empty", set_in("process.cwd", ""), "$.process.cwd", "must not be empty"),
    ("cwd relative", set_in("process.cwd", "work"), "$.process.cwd", "'work' must be an absolute"),
    ("env no =", set_in("process.env", ["A=1", "B"]), "$.process.env[1]", "missing '='"),
    ("env empty name", set_in("process.env", ["=x"]), "$.process.env[0]", "empty name"),
    ("env NUL", set_in("process.env", ["A=b\x00"]), "$.process.env[0]", "NUL"),
    (
        "unknown capability",
        set_in("process.capabilities.ambient", ["CAP_KILL", "NET_ADMIN"]),
        "$.process.capabilities.ambient[1]",
        "unknown capability 'NET_ADMIN'",
    ),
    (
        "unknown rlimit",
        set_in("process.rlimits", [{"type": "RLIMIT_FOO", "hard": 1, "soft": 1}]),
        "$.process.rlimits[0].type",
        "unknown rlimit type 'RLIMIT_FOO'",
    ),
    (
        "duplicate rlimit",
        set_in(
            "process.rlimits",
            [
                {"type": "RLIMIT_NOFILE", "hard": 2, "soft": 1},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NOFILE", "hard": 4, "soft": 3},
            ],
        ),
        "$.process.rlimits[2].type",
        "duplicate rlimit 'RLIMIT_NOFILE'",
    ),
    (
        "rlimit soft > hard",
        set_in("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]),
        "$.process.rlimits[0]",
        "soft limit 2 exceeds hard limit 1",
    ),
    ("oomScoreAdj", set_in("process.oomScoreAdj", 1001), "$.process.oomScoreAdj", "1001"),
    (
        "scheduler policy",
        set_in("process.scheduler", {"policy": "SCHED_WHATEVER"}),
        "$.process.scheduler.policy",
        "'SCHED_WHATEVER'",
    ),
    (
        "scheduler flag",
        set_in("process.scheduler", {"policy": "SCHED_OTHER", "flags": ["X"]}),
        "$.process.scheduler.flags[0]",
        "unknown scheduler flag 'X'",
    ),
    (
        "scheduler nice",
        set_in("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20}),
        "$.process.scheduler.nice",
        "invalid nice value 20",
    ),
    (
        "scheduler priority",
        set_in("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5}),
        "$.process.scheduler.priority",
        "SCHED_FIFO or SCHED_RR",
    ),
    (
        "scheduler deadline fields",
        set_in("process.scheduler", {"policy": "SCHED_RR", "runtime": 5}),
        "$.process.scheduler",
        "SCHED_DEADLINE",
    ),
    (
        "ioPriority class",
        set_in("process.ioPriority", {"class": "IOPRIO_CLASS_X", "priority": 0}),
        "$.process.ioPriority.class",
        "'IOPRIO_CLASS_X'",
    ),
    (
        "ioPriority level",
        set_in("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}),
        "$.process.ioPriority.priority",
        "invalid priority 8",
    ),
    (
        "execCPUAffinity",
        set_in("process.execCPUAffinity", {"final": "3-1"}),
        "$.process.execCPUAffinity.final",
        "runs backwards",
    ),
    # root, hostname, mounts, hooks
    ("root path", set_in("root.path", ""), "$.root.path", "must not be empty"),
    (
        "hostname without uts",
        both(
            set_in("hostname", "h"),
            lambda d: d["linux"].__setitem__(
                "namespaces", [n for n in d["linux"]["namespaces"] if n["type"] != "uts"]
            ),
        ),
        "$.hostname",
        "without a UTS namespace",
    ),
    (
        "domainname without uts",
        both(
            set_in("domainname", "d"),
            lambda d: d.pop("hostname"),
            lambda d: d["linux"].__setitem__(
                "namespaces", [n for n in d["linux"]["namespaces"] if n["type"] != "uts"]
            ),
        ),
        "$.domainname",
        "unable to set domainname 'd'",
    ),
    (
        "mount destination empty",
        set_in("mounts.1.destination", ""),
        "$.mounts[1].destination",
        "must not be empty",
    ),
    (
        "idmapped mount needs both maps",
        set_in(
            "mounts.0",
            {
                "destination": "/m",
                "source": "/s",
                "options": ["bind"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
        ),
        "$.mounts[0]",
        "both uid and gid mappings",
    ),
    (
        "idmapped mount must be bind",
        set_in(
            "mounts.0",
            {
                "destination": "/m",
                "type": "tmpfs",
                "source": "tmpfs",
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
        ),
        "$.mounts[0]",
        "only supported for bind mounts",
    ),
    (
        "idmapped mount size 0",
        set_in(
            "mounts.0",
            {
                "destination": "/m",
                "source": "/s",
                "options": ["rbind"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1, "size": 0}],
            },
        ),
        "$.mounts[0].gidMappings[0].size",
        "greater than 0",
    ),
    (
        "hook path relative",
        set_in("hooks.createRuntime", [{"path": "bin/hook"}]),
        "$.hooks.createRuntime[0].path",
        "'bin/hook' must be absolute",
    ),
    (
        "hook timeout",
        set_in("hooks.poststop", [{"path": "/h", "timeout": 0}]),
        "$.hooks.poststop[0].timeout",
        "greater than 0",
    ),
    # namespaces and id mappings
    (
        "unknown namespace",
        set_in("linux.namespaces.2", {"type": "net"}),
        "$.linux.namespaces[2].type",
        "unknown namespace type 'net'",
    ),
    (
        "duplicate namespace",
        lambda d: d["linux"]["namespaces"].append({"type": "pid", "path": "/proc/1/ns/pid"}),
        "$.linux.namespaces[5].type",
        "duplicate namespace 'pid'",
    ),
    (
        "namespace path relative",
        set_in("linux.namespaces.1", {"type": "network", "path": "run/netns/x"}),
        "$.linux.namespaces[1].path",
        "must be absolute",
    ),
    (
        "mappings without userns",
        set_in("linux.gidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]),
        "$.linux.gidMappings",
        "user namespace isn't enabled",
    ),
    (
        "userns without uid mappings",
        both(userns, lambda d: d["linux"].pop("uidMappings")),
        "$.linux.uidMappings",
        "user namespaces enabled, but no uid mappings",
    ),
    (
        "userns without gid mappings",
        both(userns, set_in("linux.gidMappings", [])),
        "$.linux.gidMappings",
        "user namespaces enabled, but no gid mappings",
    ),
    (
        "joined userns with mappings",
        both(userns, lambda d: d["linux"]["namespaces"][-1].__setitem__("path", "/proc/9/ns/user")),
        "$.linux.uidMappings",
        "both namespace path and mapping",
    ),
    (
        "mapping size 0",
        both(userns, set_in("linux.uidMappings.0.size", 0)),
        "$.linux.uidMappings[0].size",
        "greater than 0",
    ),
    (
        "timeOffsets without time ns",
        set_in("linux.timeOffsets", {"monotonic": {"secs": 1}}),
        "$.linux.timeOffsets",
        "time namespace isn't enabled",
    ),
    (
        "timeOffsets with joined time ns",
        both(
            lambda d: d["linux"]["namespaces"].append({"type": "time", "path": "/proc/1/ns/time"}),
            set_in("linux.timeOffsets", {"monotonic": {"secs": 1}}),
        ),
        "$.linux.timeOffsets",
        "joined, not created",
    ),
    (
        "timeOffsets unknown clock",
        both(
            lambda d: d["linux"]["namespaces"].append({"type": "time"}),
            set_in("linux.timeOffsets", {"realtime": {"secs": 1}}),
        ),
        "$.linux.timeOffsets.realtime",
        "unknown clock 'realtime'",
    ),
    (
        "timeOffsets nanosecs",
        both(
            lambda d: d["linux"]["namespaces"].append({"type": "time"}),
            set_in("linux.timeOffsets", {"boottime": {"nanosecs": 1_000_000_000}}),
        ),
        "$.linux.timeOffsets.boottime.nanosecs",
        "not below",
    ),
    # sysctl
    (
        "sysctl malformed",
        set_in("linux.sysctl", {"net..ipv4": "1"}),
        '$.linux.sysctl["net..ipv4"]',
        "not well-formed",
    ),
    (
        "sysctl with space",
        set_in("linux.sysctl", {"net.ipv4.ip forward": "1"}),
        '$.linux.sysctl["net.ipv4.ip forward"]',
        "not well-formed",
    ),
    (
        "sysctl ipc without ipc ns",
        both(
            set_in("linux.sysctl", {"kernel.shmmax": "1"}),
            lambda d: d["linux"].__setitem__(
                "namespaces", [n for n in d["linux"]["namespaces"] if n["type"] != "ipc"]
            ),
        ),
        '$.linux.sysctl["kernel.shmmax"]',
        "host's ipc namespace",
    ),
    (
        "sysctl net without netns",
        both(
            set_in("linux.sysctl", {"net/ipv4/ip_forward": "1"}),
            lambda d: d["linux"].__setitem__(
                "namespaces", [n for n in d["linux"]["namespaces"] if n["type"] != "network"]
            ),
        ),
        '$.linux.sysctl["net/ipv4/ip_forward"]',
        "host's network namespace",
    ),
    (
        "sysctl kernel.hostname",
        set_in("linux.sysctl", {"kernel.hostname": "x"}),
        '$.linux.sysctl["kernel.hostname"]',
        "conflicts with $.hostname",
    ),
    (
        "sysctl not namespaced",
        set_in("linux.sysctl", {"vm.swappiness": "1"}),
        '$.linux.sysctl["vm.swappiness"]',
        "not in a separate kernel namespace",
    ),
    # other linux members
    (
        "rootfsPropagation",
        set_in("linux.rootfsPropagation", "sideways"),
        "$.linux.rootfsPropagation",
        "'sideways' is not supported",
    ),
    (
        "maskedPaths relative",
        set_in("linux.maskedPaths", ["/proc/kcore", "proc/keys"]),
        "$.linux.maskedPaths[1]",
        "must be an absolute path",
    ),
    (
        "readonlyPaths relative",
        set_in("linux.readonlyPaths", ["sys"]),
        "$.linux.readonlyPaths[0]",
        "must be an absolute path",
    ),
    (
        "device type",
        set_in("linux.devices", [{"path": "/dev/x", "type": "x", "major": 1, "minor": 1}]),
        "$.linux.devices[0].type",
        "unknown device type 'x'",
    ),
    (
        "device path",
        set_in("linux.devices", [{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]),
        "$.linux.devices[0].path",
        "must be absolute",
    ),
    (
        "netDevices without netns",
        both(
            set_in("linux.netDevices", {"eth1": {}}),
            lambda d: d["linux"].__setitem__(
                "namespaces", [n for n in d["linux"]["namespaces"] if n["type"] != "network"]
            ),
        ),
        "$.linux.netDevices",
        "without a network namespace",
    ),
    (
        "netDevices bad name",
        set_in("linux.netDevices", {"eth1": {"name": "a/b"}}),
        "$.linux.netDevices.eth1.name",
        "not a valid network interface name",
    ),
    (
        "netDevices long host name",
        set_in("linux.netDevices", {"x" * 16: {}}),
        f"$.linux.netDevices.{'x' * 16}",
        "not a valid network interface name",
    ),
    (
        "personality",
        set_in("linux.personality", {"domain": "SVR4"}),
        "$.linux.personality.domain",
        "'SVR4'",
    ),
    # resources
    (
        "device rule type",
        set_in("linux.resources.devices", [{"allow": True, "type": "p"}]),
        "$.linux.resources.devices[0].type",
        "unknown device type 'p'",
    ),
    (
        "device rule access",
        set_in("linux.resources.devices", [{"allow": True, "access": "rwx"}]),
        "$.linux.resources.devices[0].access",
        "'rwx'",
    ),
    (
        "cpuset cpus",
        set_in("linux.resources.cpu", {"cpus": "0-3,a"}),
        "$.linux.resources.cpu.cpus",
        "is not a list",
    ),
    (
        "cpuset mems",
        set_in("linux.resources.cpu", {"mems": "1,"}),
        "$.linux.resources.cpu.mems",
        "is not a list",
    ),
    (
        "weightDevice without weight",
        set_in("linux.resources.blockIO", {"weightDevice": [{"major": 8, "minor": 0}]}),
        "$.linux.resources.blockIO.weightDevice[0]",
        "at least one of weight, leafWeight",
    ),
    (
        "hugepage size",
        set_in("linux.resources.hugepageLimits", [{"pageSize": "2M", "limit": 1}]),
        "$.linux.resources.hugepageLimits[0].pageSize",
        "'2M'",
    ),
    (
        "rdma entry empty",
        set_in("linux.resources.rdma", {"mlx5_1": {}}),
        "$.linux.resources.rdma.mlx5_1",
        "at least one of hcaHandles, hcaObjects",
    ),
    (
        "unified with slash",
        set_in("linux.resources.unified", {"../memory.max": "1"}),
        '$.linux.resources.unified["../memory.max"]',
        "no slashes",
    ),
    (
        "unified without controller",
        set_in("linux.resources.unified", {"max": "1"}),
        "$.linux.resources.unified.max",
        "CONTROLLER.PARAMETER",
    ),
    # seccomp
    (
        "seccomp defaultAction",
        set_in("linux.seccomp", {"defaultAction": "SCMP_ACT_MAYBE"}),
        "$.linux.seccomp.defaultAction",
        "unknown seccomp action 'SCMP_ACT_MAYBE'",
    ),
    (
        "seccomp notify default",
        set_in("linux.seccomp", {"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/s"}),
        "$.linux.seccomp.defaultAction",
        "cannot be used as default action",
    ),
    (
        "seccomp defaultErrnoRet",
        set_in("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
        "$.linux.seccomp.defaultErrnoRet",
        "SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
    ),
    (
        "seccomp arch",
        set_in(
            "linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}
        ),
        "$.linux.seccomp.architectures[0]",
        "'SCMP_ARCH_Z80'",
    ),
    (
        "seccomp flag",
        set_in("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["FLAG"]}),
        "$.linux.seccomp.flags[0]",
        "unknown seccomp flag 'FLAG'",
    ),
    (
        "seccomp metadata without listener",
        set_in("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "m"}),
        "$.linux.seccomp.listenerMetadata",
        "listenerPath is not",
    ),
    (
        "seccomp rule action",
        set_in(
            "linux.seccomp",
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "NOPE"}]},
        ),
        "$.linux.seccomp.syscalls[0].action",
        "unknown seccomp action 'NOPE'",
    ),
    (
        "seccomp rule names empty",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}],
            },
        ),
        "$.linux.seccomp.syscalls[0].names",
        "at least one syscall",
    ),
    (
        "seccomp rule name empty",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_LOG"}],
            },
        ),
        "$.linux.seccomp.syscalls[0].names[1]",
        "must not be empty",
    ),
    (
        "seccomp notify without listener",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mknod"], "action": "SCMP_ACT_NOTIFY"}],
            },
        ),
        "$.linux.seccomp.syscalls[0].action",
        "listenerPath is not set",
    ),
    (
        "seccomp notify write",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/run/a.sock",
                "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}],
            },
        ),
        "$.linux.seccomp.syscalls[0].names",
        "write syscall",
    ),
    (
        "seccomp errnoRet with allow",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}],
            },
        ),
        "$.linux.seccomp.syscalls[0].errnoRet",
        "not SCMP_ACT_ALLOW",
    ),
    (
        "seccomp arg index",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
        ),
        "$.linux.seccomp.syscalls[0].args[0].index",
        "argument index 6",
    ),
    (
        "seccomp arg op",
        set_in(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_APPROX"}],
                    }
                ],
            },
        ),
        "$.linux.seccomp.syscalls[0].args[0].op",
        "'SCMP_CMP_APPROX'",
    ),
    # intelRdt, memoryPolicy
    (
        "intelRdt closID",
        set_in("linux.intelRdt", {"closID": "a/b"}),
        "$.linux.intelRdt.closID",
        "'a/b'",
    ),
    (
        "intelRdt memBwSchema prefix",
        set_in("linux.intelRdt", {"memBwSchema": "L3:0=1"}),
        "$.linux.intelRdt.memBwSchema",
        "must start with 'MB:'",
    ),
    (
        "intelRdt schemata newline",
        set_in("linux.intelRdt", {"schemata": ["L3:0=1\nMB:0=2"]}),
        "$.linux.intelRdt.schemata[0]",
        "newlines",
    ),
    (
        "memoryPolicy mode",
        set_in("linux.memoryPolicy", {"mode": "MPOL_RANDOM"}),
        "$.linux.memoryPolicy.mode",
        "'MPOL_RANDOM'",
    ),
    (
        "memoryPolicy flag",
        set_in("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "0", "flags": ["F"]}),
        "$.linux.memoryPolicy.flags[0]",
        "'F'",
    ),
    (
        "memoryPolicy nodes for default",
        set_in("linux.memoryPolicy", {"mode": "MPOL_DEFAULT", "nodes": "0"}),
        "$.linux.memoryPolicy.nodes",
        "takes no nodes",
    ),
    (
        "memoryPolicy bind without nodes",
        set_in("linux.memoryPolicy", {"mode": "MPOL_BIND"}),
        "$.linux.memoryPolicy.nodes",
        "needs at least one node",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "where", "text"),
    [pytest.param(m, w, t, id=name) for name, m, w, t in CASES],
)
def test_validation_rule(mutate: Mutation, where: str, text: str) -> None:
    invalid(mutate, where, text)


def test_validation_error_message_names_path_and_value() -> None:
    doc = base()
    doc["linux"]["namespaces"][2]["type"] = "nett"
    with pytest.raises(SpecError) as info:
        validate_spec(decode_spec(json.dumps(doc).encode()))
    assert str(info.value).startswith("$.linux.namespaces[2].type: unknown namespace type 'nett'")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(set_in("linux.sysctl", {"kernel.shmmax": "1"}), id="ipc sysctl"),
        pytest.param(set_in("linux.sysctl", {"fs.mqueue.queues_max": "1"}), id="mqueue sysctl"),
        pytest.param(set_in("linux.sysctl", {"net.ipv4.ip_forward": "1"}), id="net sysctl"),
        pytest.param(
            set_in("linux.sysctl", {"net/ipv4/conf/eth0.100/forwarding": "1"}), id="slashed"
        ),
        pytest.param(set_in("linux.sysctl", {"kernel.domainname": "x"}), id="domainname sysctl"),
        pytest.param(set_in("process.env", ["A=", "B=c=d"]), id="env values with ="),
        pytest.param(set_in("linux.namespaces.1.path", "/run/netns/x"), id="joined netns"),
        pytest.param(set_in("linux.rootfsPropagation", "rprivate"), id="rprivate"),
        pytest.param(set_in("linux.devices", [{"path": "/dev/f", "type": "p"}]), id="fifo"),
        pytest.param(set_in("linux.resources.devices.0.type", "a"), id="device rule all"),
        pytest.param(set_in("linux.netDevices", {"eth1": {"name": "ctr%d"}}), id="name template"),
        pytest.param(set_in("linux.intelRdt", {"closID": "/"}), id="default clos"),
        pytest.param(
            set_in("linux.memoryPolicy", {"mode": "MPOL_PREFERRED"}), id="preferred no nodes"
        ),
        pytest.param(
            set_in(
                "linux.seccomp",
                {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [
                        {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 1},
                        {"names": ["bpf"], "action": "SCMP_ACT_KILL_PROCESS"},
                    ],
                },
            ),
            id="trace with errno",
        ),
        pytest.param(
            set_in(
                "mounts.0",
                {
                    "destination": "/m",
                    "type": "bind",
                    "source": "/s",
                    "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                },
            ),
            id="idmapped bind by type",
        ),
        pytest.param(
            set_in("process.scheduler", {"policy": "SCHED_FIFO", "priority": 50}), id="fifo prio"
        ),
    ],
)
def test_accepted_edge_cases(mutate: Mutation) -> None:
    assert valid(mutate) == []


def test_joined_userns_needs_no_mappings() -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["linux"]["namespaces"].append({"type": "user", "path": "/proc/7/ns/user"})

    assert valid(mutate) == []


def test_relative_mount_destination_is_a_warning() -> None:
    warnings = valid(set_in("mounts.0.destination", "proc"))
    assert len(warnings) == 1
    assert warnings[0].startswith("$.mounts[0].destination:")
    assert "relative to /" in warnings[0]


def test_l3_schema_without_prefix_is_a_warning() -> None:
    warnings = valid(set_in("linux.intelRdt", {"l3CacheSchema": "0=7f"}))
    assert warnings == ["$.linux.intelRdt.l3CacheSchema: '0=7f' should start with 'L3:'"]


def test_personality_flags_are_a_warning() -> None:
    warnings = valid(set_in("linux.personality", {"domain": "LINUX", "flags": ["X"]}))
    assert len(warnings) == 1 and "personality" in warnings[0]


def test_no_process_needs_no_process_checks() -> None:
    assert valid(lambda d: d.pop("process")) == []


def test_validate_process_for_exec() -> None:
    proc = msgspec.convert(
        {"user": {"uid": 0, "gid": 0}, "args": ["ls"], "cwd": "tmp"}, type=rs.Process
    )
    with pytest.raises(SpecError) as info:
        rs.validate_process(proc, where="process.json")
    assert info.value.where == "process.json.cwd"


def test_constants_are_consistent() -> None:
    assert len(rs.CAPABILITIES) == 41 and rs.CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert len(set(rs.NAMESPACE_TYPES)) == 8
    assert sorted(rs.RLIMITS.values()) == list(range(16))
