"""Rendering Docker's seccomp profile into a runtime-spec ``linux.seccomp`` section."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import bulkhead.oci
from bulkhead.errors import SpecError
from bulkhead.oci.seccomp_profile import (
    docker_default_profile,
    kernel_version,
    load_profile,
    normalize_arch,
    normalize_capability,
    render_profile,
)

# Docker's default profile as the package ships it (a copy of the project's reference data).
PROFILE = Path(bulkhead.oci.__file__).parent / "data" / "docker-default-seccomp.json"

pytestmark = pytest.mark.skipif(not PROFILE.exists(), reason="Docker's profile is not available")

#: Docker's 14 default capabilities
DEFAULT_CAPS = {
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
}


def render(
    caps: set[str] = DEFAULT_CAPS, arch: str = "x86_64", kernel: str = "6.1.0"
) -> dict[str, Any]:
    return docker_default_profile(caps, arch, path=PROFILE, kernel_release=kernel)


def rules_for(section: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in section["syscalls"] if name in r["names"]]


def allowed(section: dict[str, Any], name: str) -> bool:
    """Unconditionally allowed."""
    return any(
        r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for r in rules_for(section, name)
    )


def test_top_level_fields_on_x86_64() -> None:
    section = render()
    assert section["defaultAction"] == "SCMP_ACT_ERRNO"
    assert section["defaultErrnoRet"] == 1
    assert section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "archMap" not in section
    for rule in section["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
        assert rule["names"]


def test_default_capabilities_x86_64() -> None:
    section = render()
    assert allowed(section, "read")
    assert allowed(section, "arch_prctl")
    assert allowed(section, "modify_ldt")
    assert allowed(section, "chroot")  # CAP_SYS_CHROOT is a default capability
    assert not allowed(section, "mount")  # CAP_SYS_ADMIN is not
    assert not allowed(section, "reboot")
    assert not allowed(section, "open_by_handle_at")
    assert not rules_for(section, "riscv_flush_icache")
    assert not rules_for(section, "arm_fadvise64_64")
    # without CAP_SYS_ADMIN: clone only without namespace flags, clone3 answers ENOSYS
    (clone,) = rules_for(section, "clone")
    assert clone["args"] == [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for(section, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    assert len(rules_for(section, "personality")) == 5


def test_sys_admin_unlocks_its_syscalls() -> None:
    section = render(DEFAULT_CAPS | {"CAP_SYS_ADMIN"})
    assert allowed(section, "mount")
    assert allowed(section, "clone")
    assert allowed(section, "clone3")
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(section, "clone3"))
    # the excluded-by-CAP_SYS_ADMIN masked clone rule is gone
    assert all(not r.get("args") for r in rules_for(section, "clone"))


def test_capability_names_without_prefix() -> None:
    assert render({"sys_admin", "SYS_PTRACE"}) == render({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"})
    assert normalize_capability("net_raw") == "CAP_NET_RAW"


def test_min_kernel() -> None:
    # process_vm_readv & co. are allowed to everyone from 4.8 on
    assert allowed(render(kernel="4.8.0"), "process_vm_writev")
    assert allowed(render(kernel="5.10.0-26-amd64"), "process_vm_writev")
    assert not allowed(render(kernel="4.4.0-210-generic"), "process_vm_writev")
    assert allowed(render({"CAP_SYS_PTRACE"}, kernel="4.4.0"), "process_vm_writev")


def test_aarch64() -> None:
    section = render(arch="aarch64")
    assert section["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert allowed(section, "arm_fadvise64_64")
    assert not rules_for(section, "arch_prctl")
    assert render(arch="arm64") == section


def test_s390x_clone_argument_order() -> None:
    section = render(arch="s390x")
    assert section["architectures"] == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    (clone,) = rules_for(section, "clone")
    assert clone["args"][0]["index"] == 1


def test_riscv64_has_no_sub_architectures() -> None:
    assert render(arch="riscv64")["architectures"] == ["SCMP_ARCH_RISCV64"]


def test_arch_names() -> None:
    assert normalize_arch("x86_64") == normalize_arch("amd64") == "amd64"
    assert normalize_arch("aarch64") == "arm64"
    assert normalize_arch("i686") == "x86"
    with pytest.raises(SpecError, match="pdp11"):
        normalize_arch("pdp11")


def test_kernel_versions() -> None:
    assert kernel_version("6.18.44-fc-v669") == (6, 18)
    assert kernel_version("3.12-1-amd64") == (3, 12)
    assert kernel_version("4.8") == (4, 8)
    assert kernel_version("5.15.0+") == (5, 15)
    with pytest.raises(SpecError):
        kernel_version("six")


def test_result_is_independent_of_the_profile() -> None:
    profile = load_profile(PROFILE)
    before = copy.deepcopy(profile)
    section = render_profile(profile, DEFAULT_CAPS, "x86_64", "6.1")
    section["syscalls"][0]["names"].append("mutated")
    section["architectures"].append("mutated")
    assert profile == before


def test_architectures_and_arch_map_are_exclusive() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "archMap": [{"architecture": "SCMP_ARCH_X86_64"}],
    }
    with pytest.raises(SpecError, match="archMap"):
        render_profile(profile, set(), "x86_64", "6.1")


def test_plain_architectures_are_kept() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    }
    section = render_profile(profile, set(), "x86_64", "6.1")
    assert section == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [],
    }


def test_single_name_rules() -> None:
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 30}],
    }
    section = render_profile(profile, set(), "x86_64", "6.1")
    assert section["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}]
    profile["syscalls"][0]["names"] = ["rmdir"]
    with pytest.raises(SpecError, match=r"syscalls\[0\]"):
        render_profile(profile, set(), "x86_64", "6.1")


def test_bad_min_kernel() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "soon"}}
        ],
    }
    with pytest.raises(SpecError, match=r"syscalls\[0\].*soon"):
        render_profile(profile, set(), "x86_64", "6.1")


def test_bad_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SpecError, match="invalid JSON"):
        load_profile(bad)
    bad.write_text("[]")
    with pytest.raises(SpecError, match="JSON object"):
        load_profile(bad)


def test_output_is_valid_runtime_spec() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    from bulkhead.oci.defaults import default_spec

    config = default_spec()
    config["linux"]["seccomp"] = render()
    spec = runtime_spec.decode_spec(json.dumps(config).encode())
    assert spec.linux.seccomp.default_errno_ret == 1
    assert len(spec.linux.seccomp.syscalls) == len(config["linux"]["seccomp"]["syscalls"])
