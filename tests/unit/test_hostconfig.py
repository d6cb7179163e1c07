"""ContainerCreateRequest bodies -> CreateRequest: what docker CLI 28 and docker-py 7 really send.

The fixtures under ``data/create_requests`` were recorded from the real
clients (``docker run``/``docker create`` and ``docker.DockerClient``)
talking to a socket that logged each request body (``data/create_requests/record.py``
records more).
"""

from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bulkhead.api.errors import status_for
from bulkhead.engine.hostconfig import (
    INIT_PATH,
    CreateRequest,
    InvalidRequest,
    parse_create_request,
    parse_signal,
    run_options,
)
from bulkhead.engine.options import ThrottleDevice, TmpfsMount, Ulimit
from bulkhead.engine.spec import build_spec
from bulkhead.oci.image_spec import ImageConfig

DATA = Path(__file__).parent / "data" / "create_requests"
NULL = os.stat("/dev/null").st_rdev
NULL_NUMBERS = (os.major(NULL), os.minor(NULL))


def fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return doc


def parse_fixture(name: str, **kw: Any) -> CreateRequest:
    doc = fixture(name)
    query = parse_qs(urlsplit(doc["target"]).query)
    return parse_create_request(
        doc["body"],
        name=query.get("name", [None])[0],
        platform=query.get("platform", [None])[0],
        **kw,
    )


ALL_VALID = sorted(p.stem for p in DATA.glob("*.json") if p.stem != "py_api_create_container")


@pytest.mark.parametrize("name", ALL_VALID)
def test_every_recorded_body_parses(name: str) -> None:
    req = parse_fixture(name)
    assert req.image == "busybox"
    assert req.options.network_mode in ("none", "host", "default")
    assert req.host_config["RestartPolicy"]["Name"] in ("no", "on-failure")


@pytest.mark.parametrize("name", ALL_VALID)
def test_every_recorded_body_builds_a_spec(name: str, tmp_path: Path) -> None:
    req = parse_fixture(name)
    opts = req.options
    if opts.pid_mode and opts.pid_mode.startswith("container:"):
        pytest.skip("container: modes need the engine to resolve namespace paths")
    spec = build_spec(
        _image_config(),
        opts,
        rootfs=str(tmp_path),
        container_id="a" * 64,
        host_rlimit_nofile_hard=20000,
        cgroup_v2=False,
        seccomp_profile={"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []},
    )
    assert spec["process"]["args"]


def _image_config() -> ImageConfig:
    import msgspec

    return msgspec.convert(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        ImageConfig,
    )


def test_plain_run_is_docker_defaults() -> None:
    req = parse_fixture("cli_run_detach_name")
    assert req.name == "web"
    assert req.config["Cmd"] == ["echo", "hi"]
    assert req.config["Entrypoint"] is None
    assert req.config["Env"] == []
    assert req.options.cmd == ["echo", "hi"]
    assert req.options.entrypoint is None
    # the CLI's zeros mean "not set"
    o = req.options
    assert (o.memory, o.memory_swap, o.memory_swappiness, o.cpus, o.cpu_shares) == (
        None, None, None, None, None,
    )  # fmt: skip
    assert (o.pids_limit, o.shm_size, o.oom_score_adj, o.blkio_weight) == (None, None, None, None)
    assert o.pid_mode is o.ipc_mode is o.uts_mode is o.cgroupns_mode is None
    assert not o.init and o.init_path is None
    assert req.host_config["NetworkMode"] == "default"  # the engine makes it bridge (or none)
    assert req.log_driver == "json-file"
    assert req.log_max_size is None and req.log_max_files is None
    assert not req.auto_remove
    assert req.runtime is None
    assert req.console_size is None
    assert req.warnings == []


def test_many_flags_as_the_docker_cli_sends_them() -> None:
    req = parse_fixture("cli_run_many_flags")
    o = req.options
    assert req.name == "full"
    assert req.platform == "linux/amd64"
    assert o.hostname == "myhost"
    assert o.user == "1000:1000"
    assert o.env == ["A=1"]
    assert o.workdir == "/tmp"
    assert o.group_add == ["10"]
    assert o.entrypoint == ["/bin/sh"]
    assert o.cmd == ["-c", "echo hi"]
    assert o.init and o.init_path == INIT_PATH
    assert o.labels == {"a": "b", "k": "v"}
    assert o.read_only and o.privileged
    assert o.cap_add == ["CAP_NET_ADMIN"] and o.cap_drop == ["CAP_MKNOD"]
    assert o.security_opt == ["no-new-privileges", "seccomp=unconfined"]
    assert o.ulimits == [Ulimit("nofile", 100, 200)]
    assert o.sysctls == {"net.ipv4.ip_forward": "1"}
    assert o.memory == 64 << 20
    assert o.memory_reservation == 32 << 20
    assert o.memory_swap == 128 << 20
    assert o.oom_kill_disable and o.oom_score_adj == 100
    assert o.cpus == 1.5 and o.cpu_shares == 512
    assert o.cpuset_cpus == "0" and o.cpuset_mems == "0"
    assert o.pids_limit == 50 and o.blkio_weight == 300
    mynull = [d for d in o.devices if d.path_in_container == "/dev/mynull"]
    assert len(mynull) == 1
    assert (mynull[0].type, mynull[0].major, mynull[0].minor) == ("c", *NULL_NUMBERS)
    assert mynull[0].permissions == "rw"
    # --privileged adds every host device too
    assert len(o.devices) > 1
    assert o.device_read_bps == [ThrottleDevice(*NULL_NUMBERS, 1 << 20)]
    assert o.device_write_iops == [ThrottleDevice(*NULL_NUMBERS, 100)]
    assert o.shm_size == 128 << 20
    assert TmpfsMount("/run", ("noexec", "nosuid", "nodev", "size=1048576")) in o.tmpfs
    assert TmpfsMount("/x", ("noexec", "nosuid", "nodev")) in o.tmpfs
    assert (o.pid_mode, o.ipc_mode, o.uts_mode, o.userns_mode, o.cgroupns_mode) == (
        "host", "shareable", None, "host", "private",
    )  # fmt: skip
    assert o.stop_signal == "SIGUSR1"
    assert req.stop_timeout == 5
    assert req.log_max_size == 1 << 20 and req.log_max_files == 2
    assert req.runtime == "runc"
    assert req.host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    # storage passes through to the volumes resolver
    assert req.host_config["Binds"] == ["/tmp:/host:ro", "vol:/data"]
    assert req.host_config["VolumesFrom"] == ["other:ro"]
    assert [m["Type"] for m in req.host_config["Mounts"]] == ["tmpfs", "bind"]
    assert req.config["Volumes"] == {"/anon": {}}
    # -p with --network none: Docker's warning, nothing published
    assert "Published ports are discarded when using none network mode" in req.warnings


def test_docker_py_many_kwargs() -> None:
    req = parse_fixture("py_create_many_kwargs")
    o = req.options
    assert req.auto_remove
    assert o.tty and o.stdin_open
    assert o.cap_add == ["CAP_NET_ADMIN"]  # docker-py sends NET_ADMIN without the prefix
    assert o.memory == 64 << 20 and o.memory_swap == 128 << 20
    assert o.cpus == 1.5
    assert o.init and o.init_path == INIT_PATH
    assert req.log_max_size == 1 << 20 and req.log_max_files is None
    assert req.host_config["Mounts"][0]["TmpfsOptions"] == {"SizeBytes": 1000}
    assert req.config["Volumes"] == {"/host": {}, "/data": {}}


def test_docker_py_minimal_body_has_the_same_defaults_as_the_cli() -> None:
    py = parse_fixture("py_run_detach")
    cli = parse_fixture("cli_run_detach_name")
    assert py.options == cli.options
    assert py.host_config["RestartPolicy"] == cli.host_config["RestartPolicy"]
    assert py.host_config["LogConfig"] == cli.host_config["LogConfig"]


def test_interactive_and_tty() -> None:
    i = parse_fixture("cli_run_interactive")
    assert i.options.stdin_open and not i.options.tty
    assert i.config["StdinOnce"] and i.config["AttachStdin"]
    it = parse_fixture("cli_run_it_rm")
    assert it.options.tty and it.options.stdin_open and it.auto_remove


def test_empty_entrypoint_resets_it() -> None:
    req = parse_fixture("cli_run_empty_entrypoint")
    assert req.options.entrypoint == []
    assert req.options.cmd == ["echo", "x"]


def test_swap_unlimited_and_numeric_stop_signal() -> None:
    req = parse_fixture("cli_run_swap_unlimited")
    assert req.options.memory_swap == -1
    assert req.options.memory == 10 << 20
    assert req.options.stop_signal == "9"
    assert req.options.ulimits == [Ulimit("nproc", 10, 10)]


def test_container_namespace_modes_and_host_network() -> None:
    req = parse_fixture("cli_run_container_ns_host_net")
    assert req.options.pid_mode == "container:full"
    assert req.options.ipc_mode == "container:full"
    assert req.options.network_mode == "host"
    assert req.options.cpu_quota == 50000 and req.options.cpu_period == 100000


def test_blkio_devices_are_looked_up() -> None:
    req = parse_fixture("cli_run_blkio")
    assert req.options.memory_swappiness == 10
    assert req.options.device_read_iops == [ThrottleDevice(*NULL_NUMBERS, 10)]
    assert req.options.device_write_bps == [ThrottleDevice(*NULL_NUMBERS, 2 << 20)]
    assert [(w.major, w.minor, w.weight) for w in req.options.blkio_weight_device] == [
        (*NULL_NUMBERS, 200)
    ]


def test_run_options_rebuilds_the_same_options_from_stored_dicts() -> None:
    req = parse_fixture("cli_run_many_flags")
    again = run_options(json.loads(json.dumps(req.config)), json.loads(json.dumps(req.host_config)))
    assert again == req.options


# --- bad input: 400 naming the field ------------------------------------------------


def _with(name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(fixture(name)["body"])
    for path, value in changes.items():
        doc = body
        keys = path.split("__")
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value
    return body


BAD = [
    (
        {"HostConfig__Memory": 1000000},
        "invalid HostConfig.Memory: Minimum memory limit allowed is 6MB",
    ),
    ({"HostConfig__Memory": "64m"}, "invalid HostConfig.Memory: expected an integer"),
    (
        {"HostConfig__MemorySwap": 1 << 30},
        "invalid HostConfig.MemorySwap: You should always set the Memory",
    ),
    (
        {"HostConfig__Memory": 64 << 20, "HostConfig__MemorySwap": 32 << 20},
        "invalid HostConfig.MemorySwap: Minimum memoryswap limit should be larger",
    ),
    (
        {"HostConfig__Memory": 64 << 20, "HostConfig__MemoryReservation": 128 << 20},
        "invalid HostConfig.MemoryReservation: Minimum memory limit can not be less",
    ),
    (
        {"HostConfig__MemorySwappiness": 101},
        "invalid HostConfig.MemorySwappiness: Invalid value: 101",
    ),
    ({"HostConfig__OomScoreAdj": 1001}, "invalid HostConfig.OomScoreAdj: Invalid value 1001"),
    ({"HostConfig__NanoCpus": 1000}, "invalid HostConfig.NanoCpus: Range of CPUs is from 0.01"),
    (
        {"HostConfig__NanoCpus": 10**9, "HostConfig__CpuPeriod": 100000},
        "invalid HostConfig.NanoCpus: Conflicting options: Nano CPUs and CPU Period",
    ),
    ({"HostConfig__CpuPeriod": 10}, "invalid HostConfig.CpuPeriod: CPU cfs period can not be less"),
    ({"HostConfig__CpuQuota": 10}, "invalid HostConfig.CpuQuota: CPU cfs quota can not be less"),
    ({"HostConfig__CpusetCpus": "0-"}, "invalid HostConfig.CpusetCpus: invalid format"),
    (
        {"HostConfig__CpusetMems": "0-99999999999"},
        "invalid HostConfig.CpusetMems: '0-99999999999' is beyond",
    ),
    (
        {"HostConfig__CpusetCpus": "4096"},
        "invalid HostConfig.CpusetCpus: Requested CPUs are not available",
    ),
    ({"HostConfig__BlkioWeight": 5}, "invalid HostConfig.BlkioWeight: Range of blkio weight"),
    (
        {"HostConfig__BlkioDeviceReadBps": [{"Path": "/nonexistent", "Rate": 1}]},
        "invalid HostConfig.BlkioDeviceReadBps[0].Path: stat /nonexistent",
    ),
    (
        {"HostConfig__BlkioDeviceReadBps": [{"Path": "/etc/hostname", "Rate": 1}]},
        "invalid HostConfig.BlkioDeviceReadBps[0].Path: /etc/hostname is not a device",
    ),
    (
        {
            "HostConfig__Devices": [
                {"PathOnHost": "/dev/null", "PathInContainer": "/dev/n", "CgroupPermissions": "rwx"}
            ]
        },
        "invalid HostConfig.Devices[0].CgroupPermissions: invalid device mode: rwx",
    ),
    (
        {
            "HostConfig__Devices": [
                {"PathOnHost": "/dev/nonexistent", "PathInContainer": "", "CgroupPermissions": ""}
            ]
        },
        "invalid HostConfig.Devices[0].PathOnHost: error gathering device information",
    ),
    (
        {"HostConfig__CapAdd": ["NET_FOO"]},
        "invalid HostConfig.CapAdd: unknown capability: 'NET_FOO'",
    ),
    (
        {"HostConfig__SecurityOpt": ["bogus=1"]},
        "invalid HostConfig.SecurityOpt: invalid --security-opt",
    ),
    (
        {"HostConfig__SecurityOpt": ["seccomp={not json"]},
        "invalid HostConfig.SecurityOpt: seccomp profile is not valid JSON",
    ),
    (
        {"HostConfig__Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]},
        "invalid HostConfig.Ulimits[0]: ulimit soft limit",
    ),
    (
        {"HostConfig__Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]},
        "invalid HostConfig.Ulimits[0]: invalid ulimit type",
    ),
    (
        {"HostConfig__Tmpfs": {"/run": "bogus=1"}},
        "invalid HostConfig.Tmpfs./run: invalid tmpfs option",
    ),
    ({"HostConfig__Tmpfs": {"run": ""}}, "invalid HostConfig.Tmpfs.run: invalid mount path"),
    ({"HostConfig__ShmSize": -1}, "invalid HostConfig.ShmSize: SHM size can not be less than 0"),
    (
        {"HostConfig__NetworkMode": "-mynet"},
        "invalid HostConfig.NetworkMode: invalid network mode '-mynet'",
    ),
    ({"HostConfig__PidMode": "bogus"}, "invalid HostConfig.PidMode: invalid mode 'bogus'"),
    ({"HostConfig__IpcMode": "container:"}, "invalid HostConfig.IpcMode: invalid mode"),
    ({"HostConfig__UTSMode": "container:x"}, "invalid HostConfig.UTSMode: invalid mode"),
    ({"HostConfig__CgroupnsMode": "shareable"}, "invalid HostConfig.CgroupnsMode: invalid mode"),
    ({"HostConfig__RestartPolicy": {"Name": "sometimes"}}, "invalid HostConfig.RestartPolicy.Name"),
    (
        {"HostConfig__RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}},
        "invalid HostConfig.RestartPolicy.MaximumRetryCount: maximum retry count can only be used with 'on-failure'",
    ),
    (
        {"HostConfig__AutoRemove": True, "HostConfig__RestartPolicy": {"Name": "always"}},
        "invalid HostConfig.AutoRemove: can't create 'AutoRemove' container with restart policy",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "syslog"}},
        "invalid HostConfig.LogConfig.Type: logging driver 'syslog'",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "", "Config": {"max-size": "lots"}}},
        "invalid HostConfig.LogConfig.Config.max-size",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "", "Config": {"max-file": "0", "max-size": "1m"}}},
        "invalid HostConfig.LogConfig.Config.max-file",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "", "Config": {"colour": "red"}}},
        "unknown log opt 'colour' for json-file log driver",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "", "Config": {"mode": "lossy"}}},
        "invalid HostConfig.LogConfig.Config.mode: logging mode not supported: lossy",
    ),
    (
        {"HostConfig__LogConfig": {"Type": "", "Config": {"max-buffer-size": "4m"}}},
        "max-buffer-size option is only supported with 'mode=non-blocking'",
    ),
    (
        {
            "HostConfig__LogConfig": {
                "Type": "",
                "Config": {"mode": "non-blocking", "max-buffer-size": "lots"},
            }
        },
        "invalid HostConfig.LogConfig.Config.max-buffer-size",
    ),
    (
        {"HostConfig__Mounts": [{"Type": "nfs", "Target": "/x"}]},
        "invalid HostConfig.Mounts[0].Type: mount type unknown",
    ),
    (
        {"HostConfig__Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "x"}]},
        "invalid HostConfig.Mounts[0].Target",
    ),
    (
        {"HostConfig__Binds": ["a:b:c:d"]},
        "invalid HostConfig.Binds[0]: invalid volume specification",
    ),
    (
        {"HostConfig__DeviceRequests": [{"Driver": "nvidia"}]},
        "invalid HostConfig.DeviceRequests: not supported",
    ),
    ({"HostConfig__ConsoleSize": [1]}, "invalid HostConfig.ConsoleSize"),
    ({"HostConfig": "nope"}, "invalid HostConfig: expected an object, got a string"),
    ({"Image": ""}, "invalid Config.Image"),
    ({"Env": ["=x"]}, "invalid Config.Env[0]: invalid environment variable"),
    ({"Env": "A=1"}, "invalid Config.Env: expected an array of strings"),
    ({"Cmd": [1]}, "invalid Config.Cmd[0]: expected a string"),
    ({"WorkingDir": "tmp"}, "invalid Config.WorkingDir: the working directory 'tmp' is invalid"),
    ({"StopSignal": "SIGNOPE"}, "invalid Config.StopSignal: invalid signal: SIGNOPE"),
    ({"StopTimeout": -5}, "invalid Config.StopTimeout"),
    ({"Hostname": "bad host"}, "invalid Config.Hostname: invalid hostname format"),
    ({"Labels": {"a": 1}}, "invalid Config.Labels.a: expected a string"),
    ({"Tty": "yes"}, "invalid Config.Tty: expected a boolean"),
    ({"Volumes": {"data": {}}}, "invalid Config.Volumes.data"),
    (
        {"HostConfig__Sysctls": {"vm.swappiness": "1"}},
        "invalid HostConfig.Sysctls.vm.swappiness: sysctl 'vm.swappiness' is not allowed: it is not namespaced",
    ),
    (
        {"HostConfig__Sysctls": {"net.ipv4.ip_forward": "1"}, "HostConfig__NetworkMode": "host"},
        "sysctl 'net.ipv4.ip_forward' is not allowed in host network namespace",
    ),
    (
        {"HostConfig__Sysctls": {"kernel.shmmax": "1"}, "HostConfig__IpcMode": "host"},
        "sysctl 'kernel.shmmax' is not allowed in host IPC namespace",
    ),
    ({"HostConfig__Sysctls": {"kernel.hostname": "x"}}, "use --hostname/--domainname"),
    ({"HostConfig__CgroupParent": "/a/../../etc"}, "invalid HostConfig.CgroupParent"),
    ({"HostConfig__CgroupParent": "/"}, "invalid HostConfig.CgroupParent"),
    (
        {"ExposedPorts": {"http/tcp": {}}},
        "invalid Config.ExposedPorts.http/tcp: invalid port specification",
    ),
    ({"ExposedPorts": {"80/icmp": {}}}, "invalid port specification: '80/icmp'"),
    ({"ExposedPorts": {"70000": {}}}, "invalid port specification: '70000'"),
    (
        {"HostConfig__PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "eighty"}]}},
        "invalid HostConfig.PortBindings.80/tcp[0].HostPort: invalid port specification",
    ),
    (
        {"Healthcheck": {"Interval": 1000}},
        "invalid Config.Healthcheck.Interval: Interval in Healthcheck cannot be less than 1ms",
    ),
    ({"Healthcheck": {"Retries": -1}}, "Retries in Healthcheck cannot be negative"),
    (
        {"Hostname": "h", "HostConfig__UTSMode": "host"},
        "invalid Config.Hostname: conflicting options: hostname and the UTS mode",
    ),
    (
        {"Hostname": "h", "HostConfig__NetworkMode": "container:web"},
        "conflicting options: hostname and the network mode",
    ),
    (
        {"HostConfig__NetworkMode": "container:web", "HostConfig__Dns": ["1.1.1.1"]},
        "invalid HostConfig.Dns: conflicting options: dns and the network mode",
    ),
    (
        {"HostConfig__NetworkMode": "container:web", "HostConfig__ExtraHosts": ["a:1.2.3.4"]},
        "custom host-to-IP mapping and the network mode",
    ),
    (
        {
            "HostConfig__NetworkMode": "container:web",
            "HostConfig__PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
        },
        "invalid HostConfig.PortBindings: conflicting options: port publishing",
    ),
    (
        {"HostConfig__NetworkMode": "container:web", "ExposedPorts": {"80/tcp": {}}},
        "port exposing and the container type network mode",
    ),
    (
        {"HostConfig__Dns": ["1.1.1.1", "dns.example"]},
        "invalid HostConfig.Dns[1]: bad nameserver address dns.example",
    ),
    (
        {"HostConfig__ExtraHosts": ["db:10.0.0.1", "nocolon"]},
        "invalid HostConfig.ExtraHosts[1]: invalid argument 'nocolon': bad format for add-host",
    ),
    (
        {"HostConfig__Links": ["a:b:c"]},
        "invalid HostConfig.Links[0]: invalid link 'a:b:c': bad format for links",
    ),
    (
        {"HostConfig__NetworkMode": "host", "HostConfig__Links": ["db:d"]},
        "conflicting options: host type networking can't be used with links",
    ),
    (
        {"HostConfig__ExtraHosts": ["db:10.0.0.300"]},
        "invalid IP address in add-host",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m[:60] for _, m in BAD])
def test_bad_input_is_a_400_naming_the_field(changes: dict[str, Any], message: str) -> None:
    body = _with("cli_run_detach_name", **changes)
    with pytest.raises(InvalidRequest) as info:
        parse_create_request(body)
    assert message in str(info.value)
    assert status_for(info.value) == 400


def test_docker_py_small_memory_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Minimum memory limit allowed is 6MB"):
        parse_fixture("py_api_create_container")


def test_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match="expected a ContainerCreateRequest object"):
        parse_create_request([1, 2])


@pytest.mark.parametrize("platform", ["windows/amd64", "linux/AMD64!", "/"])
def test_bad_platform(platform: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid platform"):
        parse_create_request(fixture("py_run_detach")["body"], platform=platform)


def test_unknown_fields_are_ignored_as_docker_does() -> None:
    body = _with("py_run_detach", Bogus=1, HostConfig__AlsoBogus={"x": 1})
    req = parse_create_request(body)
    assert req.image == "busybox"


def test_zero_console_size_is_none_and_a_real_one_is_kept() -> None:
    req = parse_create_request(_with("cli_run_it_rm", HostConfig__ConsoleSize=[40, 120]))
    assert req.console_size == (40, 120)
    assert parse_fixture("cli_run_it_rm").console_size is None


def test_log_max_size_minus_one_is_unlimited_and_none_driver() -> None:
    req = parse_create_request(
        _with(
            "py_run_detach",
            HostConfig__LogConfig={"Type": "json-file", "Config": {"max-size": "-1"}},
        )
    )
    assert req.log_max_size == 0
    req = parse_create_request(_with("py_run_detach", HostConfig__LogConfig={"Type": "none"}))
    assert req.log_driver == "none"


def test_log_modes_are_taken_and_the_log_stays_blocking() -> None:
    """Docker's generic ``mode``/``max-buffer-size``: accepted with json-file's own options."""
    for config in (
        {"mode": "blocking"},
        {"mode": "non-blocking", "max-buffer-size": "4m", "max-size": "1m", "max-file": "2"},
    ):
        req = parse_create_request(
            _with("py_run_detach", HostConfig__LogConfig={"Type": "json-file", "Config": config})
        )
        assert req.log_driver == "json-file"
        assert req.log_max_size == (1024 * 1024 if "max-size" in config else None)


def test_pids_limit_negative_is_unlimited() -> None:
    req = parse_create_request(_with("py_run_detach", HostConfig__PidsLimit=-1))
    assert req.options.pids_limit == -1


def test_string_cmd_and_entrypoint_are_accepted() -> None:
    req = parse_create_request(_with("py_run_detach", Cmd="true", Entrypoint="/bin/sh"))
    assert req.options.cmd == ["true"] and req.options.entrypoint == ["/bin/sh"]


@pytest.mark.parametrize(
    ("value", "num"),
    [
        ("9", 9),
        ("KILL", 9),
        ("SIGKILL", 9),
        ("sigterm", 15),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        (15, 15),
    ],
)
def test_parse_signal(value: str | int, num: int) -> None:
    assert parse_signal(value) == num


@pytest.mark.parametrize("value", ["0", "999", "SIGFOO", "", "SIGRTMIN+99"])
def test_parse_signal_rejects(value: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid signal"):
        parse_signal(value, "signal")


def test_namespaced_sysctls_are_allowed() -> None:
    req = parse_create_request(
        _with(
            "py_run_detach",
            HostConfig__Sysctls={
                "net.core.somaxconn": "1024",
                "kernel.shmmax": "1",
                "fs.mqueue.msg_max": "5",
            },
        )
    )
    assert req.options.sysctls["net.core.somaxconn"] == "1024"


def test_resource_warnings(tmp_path: Path) -> None:
    from bulkhead.engine.hostconfig import resource_warnings
    from bulkhead.engine.options import RunOptions

    assert resource_warnings(RunOptions()) == []
    [warning] = resource_warnings(RunOptions(oom_kill_disable=True))
    assert warning.startswith("OOM killer is disabled for the container, but no memory limit")
    assert resource_warnings(RunOptions(oom_kill_disable=True, memory=64 << 20)) == []
    no_swap = resource_warnings(
        RunOptions(memory=64 << 20, memory_swap=128 << 20), memsw_file=str(tmp_path / "absent")
    )
    if os.path.isdir("/sys/fs/cgroup/memory"):
        assert no_swap == [
            "Your kernel does not support swap limit capabilities or the cgroup is not "
            "mounted. Memory limited without swap."
        ]
    present = tmp_path / "memsw"
    present.write_text("0")
    assert (
        resource_warnings(
            RunOptions(memory=64 << 20, memory_swap=128 << 20), memsw_file=str(present)
        )
        == []
    )
    # --memory-swap -1 (unlimited) asks nothing of swap accounting
    assert (
        resource_warnings(
            RunOptions(memory=64 << 20, memory_swap=-1), memsw_file=str(tmp_path / "absent")
        )
        == []
    )


def test_network_names_are_kept_for_the_engine() -> None:
    for name in ("bridge", "mynet"):
        req = parse_create_request(_with("py_run_detach", HostConfig__NetworkMode=name))
        assert req.host_config["NetworkMode"] == name
        assert req.options.network_mode == name


def test_cgroup_parent_passes_through() -> None:
    req = parse_create_request(_with("py_run_detach", HostConfig__CgroupParent="/mine/sub"))
    assert req.host_config["CgroupParent"] == "/mine/sub"


def test_windows_only_resources_are_discarded_with_docker_warnings() -> None:
    req = parse_create_request(
        _with("cli_run_detach_name", HostConfig__CpuCount=2, HostConfig__IOMaximumIOps=5)
    )
    assert "linux does not support CPU count. Count discarded." in req.warnings
    assert "linux does not support maximum IOps. Maximum IOps discarded." in req.warnings
    assert req.host_config["CpuCount"] == 0


def test_kernel_memory_is_ignored_with_dockers_warning() -> None:
    req = parse_create_request(_with("py_run_detach", HostConfig__KernelMemory=64 << 20))
    assert any(w.startswith("Specifying a kernel memory limit is deprecated") for w in req.warnings)
    assert req.host_config["KernelMemory"] == 0


def test_ports_and_healthcheck_pass_through() -> None:
    req = parse_create_request(
        _with(
            "py_run_detach",
            ExposedPorts={"80/tcp": {}, "53/udp": {}, "8000-8010": {}},
            Healthcheck={"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Retries": 3},
            HostConfig__PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
        )
    )
    assert req.config["Healthcheck"]["Retries"] == 3
    assert set(req.config["ExposedPorts"]) == {"80/tcp", "53/udp", "8000-8010"}
