"""build_spec and the run-option parsers against Docker's documented defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bulkhead.oci
from bulkhead.engine.options import (
    DeviceMapping,
    RunOptions,
    ThrottleDevice,
    host_devices,
    parse_cpus,
    parse_device,
    parse_memory,
    parse_security_opt,
    parse_tmpfs,
    parse_ulimit,
    stat_device,
)
from bulkhead.engine.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    build_spec,
)
from bulkhead.errors import SpecError
from bulkhead.oci.image_spec import ContainerConfig, ImageConfig, RootFS
from bulkhead.oci.runtime_spec import decode_spec, validate_spec
from bulkhead.oci.seccomp_profile import load_profile

# Docker's default profile as the package ships it (a copy of the project's reference data).
PROFILE = Path(bulkhead.oci.__file__).parent / "data" / "docker-default-seccomp.json"

CID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

DOCKER_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    if not PROFILE.exists():
        pytest.skip("Docker's seccomp profile is not on this machine")
    return load_profile(PROFILE)


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
    )
    (etc / "group").write_text(
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nwheel:x:10:app\napp:x:1000:\nstaff:x:50:\n"
    )
    return str(tmp_path)


def image(**config: Any) -> ImageConfig:
    return ImageConfig(
        architecture="amd64",
        os="linux",
        rootfs=RootFS(),
        config=msgspec.convert(config, ContainerConfig) if config else None,
    )


def build(
    rootfs: str,
    profile: dict[str, Any],
    opts: RunOptions | None = None,
    img: ImageConfig | None = None,
    **kw: Any,
) -> dict[str, Any]:
    kw.setdefault("host_rlimit_nofile_hard", 20000)
    kw.setdefault("cgroup_v2", False)
    spec = build_spec(
        img or image(Cmd=["sh"]),
        opts or RunOptions(),
        rootfs=rootfs,
        container_id=CID,
        seccomp_profile=profile,
        arch="x86_64",
        kernel_release="6.1.0",
        **kw,
    )
    validate_spec(decode_spec(msgspec.json.encode(spec)))  # the runtime accepts it
    return spec


def mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, dest
    return dict(found[0])


def ns_types(spec: dict[str, Any]) -> list[str]:
    return [n["type"] for n in spec["linux"]["namespaces"]]


# --- defaults ----------------------------------------------------------------


def test_default_capabilities_are_dockers_14(rootfs, profile):
    assert list(DEFAULT_CAPABILITIES) == DOCKER_CAPS
    caps = build(rootfs, profile)["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        assert caps[kind] == DOCKER_CAPS
    assert "inheritable" not in caps and "ambient" not in caps


def test_default_masked_and_readonly_paths(rootfs, profile):
    spec = build(rootfs, profile)
    masked = spec["linux"]["maskedPaths"]
    for p in (
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    ):
        assert p in masked
    assert masked == list(DEFAULT_MASKED_PATHS)
    assert (
        spec["linux"]["readonlyPaths"]
        == list(DEFAULT_READONLY_PATHS)
        == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    )


def test_default_mounts(rootfs, profile):
    spec = build(rootfs, profile)
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ]
    assert "gid=5" in mount(spec, "/dev/pts")["options"]
    assert "ro" in mount(spec, "/sys")["options"]
    assert "ro" in mount(spec, "/sys/fs/cgroup")["options"]
    assert mount(spec, "/dev/mqueue")["type"] == "mqueue"
    shm = mount(spec, "/dev/shm")
    assert shm["type"] == "tmpfs" and f"size={64 * 1024 * 1024}" in shm["options"]
    assert "mode=1777" in shm["options"]


def test_default_device_cgroup(rootfs, profile):
    rules = build(rootfs, profile)["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r["minor"]) for r in rules if r["allow"]}
    assert allowed == {("c", 1, 5), ("c", 1, 3), ("c", 1, 9), ("c", 1, 8), ("c", 5, 0), ("c", 5, 1)}


def test_default_rlimit_nofile_capped_at_host(rootfs, profile):
    rl = build(rootfs, profile)["process"]["rlimits"]
    assert rl == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 20000}]
    rl = build(rootfs, profile, host_rlimit_nofile_hard=1 << 20)["process"]["rlimits"]
    assert rl == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288}]
    rl = build(rootfs, profile, host_rlimit_nofile_hard=-1)["process"]["rlimits"]
    assert rl[0]["hard"] == 524288


def test_defaults_misc(rootfs, profile):
    spec = build(rootfs, profile)
    assert spec["hostname"] == CID[:12]
    assert spec["linux"]["cgroupsPath"] == f"/bulkhead/{CID}"
    assert spec["root"] == {"path": rootfs, "readonly": False}
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["process"]["terminal"] is False
    assert spec["process"]["cwd"] == "/"
    assert spec["process"]["user"] == {"uid": 0, "gid": 0}
    assert ns_types(spec) == ["mount", "network", "uts", "pid", "ipc"]
    sc = spec["linux"]["seccomp"]
    assert sc["defaultAction"] == "SCMP_ACT_ERRNO"
    names = {n for r in sc["syscalls"] for n in r["names"]}
    assert "read" in names and "mount" not in names


def test_cgroupns_private_on_v2_host_on_v1(rootfs, profile):
    assert "cgroup" in ns_types(build(rootfs, profile, cgroup_v2=True))
    assert "cgroup" not in ns_types(build(rootfs, profile, cgroup_v2=False))
    assert "cgroup" in ns_types(build(rootfs, profile, RunOptions(cgroupns_mode="private")))


# --- env, args, user ---------------------------------------------------------


def test_env_merge(rootfs, profile):
    img = image(Cmd=["sh"], Env=["PATH=/opt/bin", "A=1", "B=2"])
    env = build(rootfs, profile, RunOptions(env=["B=3", "C=4"], tty=True), img)["process"]["env"]
    assert env == ["PATH=/opt/bin", f"HOSTNAME={CID[:12]}", "TERM=xterm", "A=1", "B=3", "C=4"]
    env = build(rootfs, profile)["process"]["env"]
    assert env[0].startswith("PATH=/usr/local/sbin:") and "TERM=xterm" not in env


def test_entrypoint_and_cmd_rules(rootfs, profile):
    img = image(Entrypoint=["/ep"], Cmd=["a", "b"])
    assert build(rootfs, profile, img=img)["process"]["args"] == ["/ep", "a", "b"]
    assert build(rootfs, profile, RunOptions(cmd=["c"]), img)["process"]["args"] == ["/ep", "c"]
    got = build(rootfs, profile, RunOptions(entrypoint=["/x"]), img)["process"]["args"]
    assert got == ["/x"]  # --entrypoint resets the image's Cmd
    got = build(rootfs, profile, RunOptions(entrypoint=[], cmd=["ls"]), img)["process"]["args"]
    assert got == ["ls"]
    with pytest.raises(SpecError):
        build(rootfs, profile, RunOptions(entrypoint=[]), img)


def test_init(rootfs, profile):
    opts = RunOptions(init=True, init_path="/sbin/bulkhead-init", cmd=["sleep", "1"])
    args = build(rootfs, profile, opts)["process"]["args"]
    assert args == ["/sbin/bulkhead-init", "--", "sleep", "1"]
    with pytest.raises(SpecError, match="--init"):
        build(rootfs, profile, RunOptions(init=True))


@pytest.mark.parametrize(
    ("user", "uid", "gid", "extra"),
    [
        ("app", 1000, 1000, [10]),
        ("1000", 1000, 1000, [10]),
        ("daemon:staff", 1, 50, []),
        ("1:5", 1, 5, []),
        ("4242", 4242, 0, []),
        ("app:0", 1000, 0, [10]),
    ],
)
def test_user(rootfs, profile, user, uid, gid, extra):
    u = build(rootfs, profile, RunOptions(user=user))["process"]["user"]
    assert (u["uid"], u["gid"], u.get("additionalGids", [])) == (uid, gid, extra)


def test_user_from_image_and_group_add(rootfs, profile):
    img = image(Cmd=["sh"], User="daemon")
    u = build(rootfs, profile, RunOptions(group_add=["staff", "77"]), img)["process"]["user"]
    assert u == {"uid": 1, "gid": 1, "additionalGids": [50, 77]}


def test_unknown_user_and_group(rootfs, profile):
    with pytest.raises(SpecError, match="-u") as exc:
        build(rootfs, profile, RunOptions(user="nobody"))
    assert exc.value.where == "-u"
    with pytest.raises(SpecError, match="--group-add"):
        build(rootfs, profile, RunOptions(group_add=["nogroup"]))


def test_passwd_symlink_does_not_leave_rootfs(tmp_path, profile):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    os.symlink(str(outside), root / "etc" / "passwd")
    with pytest.raises(SpecError):
        build(str(root), profile, RunOptions(user="evil"))


def test_workdir_hostname_labels(rootfs, profile):
    img = image(Cmd=["sh"], WorkingDir="/srv", Labels={"a": "1", "b": "2"})
    spec = build(
        rootfs, profile, RunOptions(hostname="web", domainname="ex.org", labels={"b": "3"}), img
    )
    assert spec["process"]["cwd"] == "/srv"
    assert spec["hostname"] == "web" and spec["domainname"] == "ex.org"
    assert spec["annotations"] == {"a": "1", "b": "3"}
    assert "HOSTNAME=web" in spec["process"]["env"]
    assert build(rootfs, profile, RunOptions(workdir="/w"), img)["process"]["cwd"] == "/w"


# --- security ------------------------------------------------------------------


def test_cap_add_drop(rootfs, profile):
    caps = build(
        rootfs,
        profile,
        RunOptions(cap_add=["net_admin", "CAP_SYS_ADMIN"], cap_drop=["mknod", "Cap_Chown"]),
    )
    bounding = caps["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding and "CAP_SYS_ADMIN" in bounding
    assert "CAP_MKNOD" not in bounding and "CAP_CHOWN" not in bounding
    names = {n for r in caps["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert "mount" in names  # rendered for CAP_SYS_ADMIN
    spec = build(rootfs, profile, RunOptions(cap_drop=["ALL"], cap_add=["kill"]))
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    spec = build(rootfs, profile, RunOptions(cap_add=["all"]))
    assert len(spec["process"]["capabilities"]["bounding"]) == 41


def test_unknown_capability(rootfs, profile):
    with pytest.raises(SpecError) as exc:
        build(rootfs, profile, RunOptions(cap_add=["CAP_FLY"]))
    assert exc.value.where == "--cap-add"
    with pytest.raises(SpecError) as exc:
        build(rootfs, profile, RunOptions(cap_drop=["nope"]))
    assert exc.value.where == "--cap-drop"


def test_privileged(rootfs, profile):
    spec = build(rootfs, profile, RunOptions(privileged=True))
    assert len(spec["process"]["capabilities"]["bounding"]) == 41
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "ro" not in mount(spec, "/sys")["options"]


def test_security_opt(rootfs, profile, tmp_path):
    spec = build(
        rootfs, profile, RunOptions(security_opt=["seccomp=unconfined", "no-new-privileges"])
    )
    assert "seccomp" not in spec["linux"]
    assert spec["process"]["noNewPrivileges"] is True
    custom = tmp_path / "p.json"
    custom.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}')
    spec = build(rootfs, profile, RunOptions(security_opt=[f"seccomp={custom}"]))
    assert spec["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    spec = build(rootfs, profile, RunOptions(security_opt=["systempaths=unconfined"]))
    assert "maskedPaths" not in spec["linux"]
    s = parse_security_opt(["apparmor=p", "label=disable", "no-new-privileges:true"])
    assert s.apparmor == "p" and s.label == ["disable"] and s.no_new_privileges
    with pytest.raises(SpecError) as exc:
        parse_security_opt(["bogus"])
    assert exc.value.where == "--security-opt"


# --- options -------------------------------------------------------------------


def test_read_only_sysctls_tty_oom(rootfs, profile):
    spec = build(
        rootfs,
        profile,
        RunOptions(
            read_only=True, sysctls={"net.ipv4.ip_forward": "1"}, tty=True, oom_score_adj=500
        ),
    )
    assert spec["root"]["readonly"] is True
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert spec["process"]["terminal"] is True
    assert spec["process"]["oomScoreAdj"] == 500
    with pytest.raises(SpecError, match="--oom-score-adj"):
        build(rootfs, profile, RunOptions(oom_score_adj=5000))


def test_ulimits(rootfs, profile):
    opts = RunOptions(ulimits=[parse_ulimit("nofile=100:200"), parse_ulimit("nproc=-1")])
    rl = build(rootfs, profile, opts)["process"]["rlimits"]
    assert {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200} in rl
    assert {"type": "RLIMIT_NPROC", "soft": 2**64 - 1, "hard": 2**64 - 1} in rl
    assert len(rl) == 2


def test_memory_resources(rootfs, profile):
    m = parse_memory("512m")
    res = build(rootfs, profile, RunOptions(memory=m))["linux"]["resources"]
    assert res["memory"] == {"limit": m, "swap": 2 * m}
    res = build(
        rootfs,
        profile,
        RunOptions(memory=m, memory_swap=-1, memory_reservation=m // 2, oom_kill_disable=True),
    )["linux"]["resources"]
    assert res["memory"] == {
        "limit": m,
        "swap": -1,
        "reservation": m // 2,
        "disableOOMKiller": True,
    }
    res = build(rootfs, profile, RunOptions(memory=m, memory_swap=2 * m))["linux"]["resources"]
    assert res["memory"]["swap"] == 2 * m
    with pytest.raises(SpecError, match="--memory-swap"):
        build(rootfs, profile, RunOptions(memory=m, memory_swap=m // 2))
    with pytest.raises(SpecError, match="--memory"):
        build(rootfs, profile, RunOptions(memory=1024))


def test_cpu_pids_blkio(rootfs, profile):
    opts = RunOptions(
        cpus=1.5,
        cpu_shares=512,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids_limit=100,
        blkio_weight=300,
        device_read_bps=[ThrottleDevice(8, 0, 1 << 20)],
    )
    res = build(rootfs, profile, opts)["linux"]["resources"]
    assert res["cpu"] == {
        "quota": 150000,
        "period": 100000,
        "shares": 512,
        "cpus": "0",
        "mems": "0",
    }
    assert res["pids"] == {"limit": 100}
    assert res["blockIO"] == {
        "weight": 300,
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
    }
    res = build(rootfs, profile, RunOptions(cpu_quota=50000, cpu_period=200000))
    assert res["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 200000}
    with pytest.raises(SpecError, match="--cpus"):
        build(rootfs, profile, RunOptions(cpus=1.0, cpu_quota=5000))
    with pytest.raises(SpecError, match="--blkio-weight"):
        build(rootfs, profile, RunOptions(blkio_weight=5))


def test_devices(rootfs, profile):
    dev = msgspec.structs.replace(
        parse_device("/dev/sda:/dev/xvda:rw"),
        type="b",
        major=8,
        minor=0,
        file_mode=0o660,
        uid=0,
        gid=6,
    )
    spec = build(rootfs, profile, RunOptions(devices=[dev]))
    assert spec["linux"]["devices"] == [
        {
            "path": "/dev/xvda",
            "type": "b",
            "major": 8,
            "minor": 0,
            "fileMode": 0o660,
            "uid": 0,
            "gid": 6,
        }
    ]
    assert {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "rw"} in spec["linux"][
        "resources"
    ]["devices"]
    with pytest.raises(SpecError, match="--device"):
        build(rootfs, profile, RunOptions(devices=[parse_device("/dev/sda")]))


def test_shm_and_tmpfs(rootfs, profile):
    opts = RunOptions(shm_size=parse_memory("128m"), tmpfs=[parse_tmpfs("/run:rw,size=64m")])
    spec = build(rootfs, profile, opts)
    assert f"size={128 << 20}" in mount(spec, "/dev/shm")["options"]
    run = mount(spec, "/run")
    assert run == {
        "destination": "/run",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["noexec", "nosuid", "nodev", "rw", f"size={64 << 20}"],
    }
    spec = build(rootfs, profile, RunOptions(ipc_mode="host"))
    assert mount(spec, "/dev/shm")["type"] == "bind" and "ipc" not in ns_types(spec)


def test_namespaces(rootfs, profile):
    spec = build(rootfs, profile, RunOptions(network_mode="host", pid_mode="host"))
    assert "network" not in ns_types(spec) and "pid" not in ns_types(spec)
    assert "hostname" not in spec  # the host's uts
    spec = build(
        rootfs, profile, RunOptions(pid_mode="container:abc"), namespaces={"pid": "/proc/42/ns/pid"}
    )
    assert {"type": "pid", "path": "/proc/42/ns/pid"} in spec["linux"]["namespaces"]
    with pytest.raises(SpecError, match="--pid"):
        build(rootfs, profile, RunOptions(pid_mode="container:abc"))
    with pytest.raises(SpecError, match="--ipc"):
        build(rootfs, profile, RunOptions(ipc_mode="weird"))
    spec = build(
        rootfs,
        profile,
        RunOptions(
            userns_mode="private", uid_maps=[(0, 100000, 65536)], gid_maps=[(0, 100000, 65536)]
        ),
    )
    assert "user" in ns_types(spec)
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]


# --- parsers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512m", 512 << 20),
        ("1g", 1 << 30),
        ("1GiB", 1 << 30),
        ("1024", 1024),
        ("10k", 10240),
        ("1.5g", 3 << 29),
        ("64MB", 64 << 20),
    ],
)
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12x", "-1m", "1..5g", "m"])
def test_parse_memory_bad(text):
    with pytest.raises(SpecError) as exc:
        parse_memory(text)
    assert exc.value.where == "--memory"


def test_parse_ulimit():
    u = parse_ulimit("nofile=1024:2048")
    assert (u.name, u.soft, u.hard) == ("nofile", 1024, 2048)
    assert parse_ulimit("nproc=512").hard == 512
    for bad in ["nofile", "nofile=", "bogus=1", "nofile=2:1", "nofile=a:b", "=1"]:
        with pytest.raises(SpecError) as exc:
            parse_ulimit(bad)
        assert exc.value.where == "--ulimit"


def test_parse_device():
    assert parse_device("/dev/sda") == DeviceMapping(
        path_on_host="/dev/sda", path_in_container="/dev/sda"
    )
    d = parse_device("/dev/sda:/dev/xvda:rwm")
    assert (d.path_on_host, d.path_in_container, d.permissions) == ("/dev/sda", "/dev/xvda", "rwm")
    d = parse_device("/dev/sda:r")
    assert (d.path_in_container, d.permissions) == ("/dev/sda", "r")
    for bad in ["/dev/sda:/dev/xvda:rwx", "sda", "/a:/b:r:w"]:
        with pytest.raises(SpecError) as exc:
            parse_device(bad)
        assert exc.value.where == "--device"


def test_parse_tmpfs():
    assert parse_tmpfs("/run").options == ("noexec", "nosuid", "nodev")
    assert parse_tmpfs("/run:exec,mode=1777").options == ("nosuid", "nodev", "exec", "mode=1777")
    for bad in ["run", "/", "/run:bogus", "/run:size=abc"]:
        with pytest.raises(SpecError) as exc:
            parse_tmpfs(bad)
        assert exc.value.where == "--tmpfs"


def test_parse_cpus():
    assert parse_cpus("1.5") == (150000, 100000)
    assert parse_cpus("0.5") == (50000, 100000)
    for bad in ["0", "-1", "abc", "0.001"]:
        with pytest.raises(SpecError) as exc:
            parse_cpus(bad)
        assert exc.value.where == "--cpus"


def test_stat_device_and_host_devices():
    null = stat_device(parse_device("/dev/null:/dev/mynull"))
    assert (null.type, null.major, null.minor, null.path_in_container) == ("c", 1, 3, "/dev/mynull")
    with pytest.raises(SpecError, match="--device"):
        stat_device(parse_device("/dev/does-not-exist"))
    with pytest.raises(SpecError, match="--device"):
        stat_device(parse_device(os.path.abspath(__file__)))
    devs = host_devices()
    paths = {d.path_on_host for d in devs}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith("/dev/pts/") for p in paths)


def test_default_profile_found_without_caller(rootfs, profile):
    spec = build_spec(
        image(Cmd=["sh"]),
        RunOptions(),
        rootfs=rootfs,
        container_id=CID,
        host_rlimit_nofile_hard=20000,
        cgroup_v2=False,
        arch="x86_64",
        kernel_release="6.1.0",
    )
    assert spec["linux"]["seccomp"] == build(rootfs, profile)["linux"]["seccomp"]


def test_apparmor_only_when_the_host_has_it(rootfs, profile):
    opts = RunOptions(security_opt=["apparmor=custom"])
    assert "apparmorProfile" not in build(rootfs, profile, opts)["process"]
    got = build(rootfs, profile, opts, apparmor_enabled=True)["process"]["apparmorProfile"]
    assert got == "custom"
    got = build(rootfs, profile, apparmor_enabled=True)["process"]["apparmorProfile"]
    assert got == "docker-default"


def test_network_modes(rootfs, profile):
    with pytest.raises(SpecError) as exc:
        build(rootfs, profile, RunOptions(network_mode="bridge"))
    assert exc.value.where == "--network"
    spec = build(
        rootfs,
        profile,
        RunOptions(network_mode="bridge"),
        namespaces={"network": "/run/bulkhead/netns/x"},
    )
    assert {"type": "network", "path": "/run/bulkhead/netns/x"} in spec["linux"]["namespaces"]
