"""bulkhead.oci.state and bulkhead.oci.features: the state and features documents."""

from __future__ import annotations

import json

import msgspec
import pytest

from bulkhead.errors import SpecError
from bulkhead.oci import features as ft
from bulkhead.oci.runtime_spec import CAPABILITIES, SECCOMP_FLAGS
from bulkhead.oci.state import (
    SECCOMP_FD_NAME,
    ContainerProcessState,
    RuncState,
    State,
    decode_state,
    encode_process_state,
    encode_runc_list,
    encode_runc_state,
    encode_state,
    go_json_escape,
    rfc3339_nano,
)

# --------------------------------------------------------------------------- State


def test_state_key_order_and_omissions() -> None:
    st = State(oci_version="1.2.0", id="c1", status="created", pid=42, bundle="/b")
    assert encode_state(st) == (
        b'{"ociVersion":"1.2.0","id":"c1","status":"created","pid":42,"bundle":"/b"}'
    )


def test_state_pid_zero_and_empty_annotations_are_left_out() -> None:
    st = State(oci_version="1.2.0", id="c1", status="stopped", bundle="/b", annotations={})
    assert st.annotations is None
    assert json.loads(encode_state(st)) == {
        "ociVersion": "1.2.0",
        "id": "c1",
        "status": "stopped",
        "bundle": "/b",
    }


def test_state_annotations_sorted_and_html_escaped() -> None:
    st = State(
        oci_version="1.2.0",
        id="c",
        status="running",
        pid=1,
        bundle="/b",
        annotations={"z": "1", "a": "<&>"},
    )
    assert encode_state(st).endswith(b'"annotations":{"a":"\\u003c\\u0026\\u003e","z":"1"}}')


def test_decode_state_round_trip_and_errors() -> None:
    doc = {
        "ociVersion": "1.0.2",
        "id": "oci-container1",
        "status": "running",
        "pid": 4422,
        "bundle": "/containers/redis",
        "annotations": {"myKey": "myValue"},
    }
    st = decode_state(json.dumps(doc).encode())
    assert st.pid == 4422 and st.annotations == {"myKey": "myValue"}
    assert json.loads(encode_state(st)) == doc
    with pytest.raises(SpecError) as info:
        decode_state(b'{"ociVersion": "1.0.2", "id": 1}', "hook stdin")
    assert str(info.value).startswith("hook stdin: ") and "$.id" in str(info.value)
    with pytest.raises(SpecError, match="invalid JSON"):
        decode_state(b"{", "hook stdin")


# --------------------------------------------------------------------------- runc state / list


def runc_state(**changes: object) -> RuncState:
    st = RuncState(
        oci_version="1.2.0",
        id="web",
        pid=1234,
        status="running",
        bundle="/bundles/web",
        rootfs="/bundles/web/rootfs",
        created="2024-05-01T12:00:00.123456789Z",
        owner="root",
    )
    return msgspec.structs.replace(st, **changes)


def test_runc_state_is_runcs_bytes() -> None:
    assert encode_runc_state(runc_state()) == (
        b"{\n"
        b'  "ociVersion": "1.2.0",\n'
        b'  "id": "web",\n'
        b'  "pid": 1234,\n'
        b'  "status": "running",\n'
        b'  "bundle": "/bundles/web",\n'
        b'  "rootfs": "/bundles/web/rootfs",\n'
        b'  "created": "2024-05-01T12:00:00.123456789Z",\n'
        b'  "owner": "root"\n'
        b"}"
    )


def test_runc_state_annotations_come_before_owner() -> None:
    data = encode_runc_state(runc_state(annotations={"b": "2", "a": "1"}))
    keys = list(json.loads(data))
    assert keys == [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "annotations",
        "owner",
    ]
    assert b'"annotations": {\n    "a": "1",\n    "b": "2"\n  },' in data


def test_runc_state_keeps_pid_zero_and_drops_empty_annotations() -> None:
    doc = json.loads(encode_runc_state(runc_state(pid=0, status="stopped", annotations={})))
    assert doc["pid"] == 0
    assert "annotations" not in doc


def test_runc_list() -> None:
    assert encode_runc_list([]) == b"null\n"
    data = encode_runc_list([runc_state(), runc_state(id="db")])
    assert data.endswith(b"}]\n") and data.count(b"\n") == 1
    assert [c["id"] for c in json.loads(data)] == ["web", "db"]


def test_runc_state_decodes() -> None:
    st = msgspec.json.decode(encode_runc_state(runc_state()), type=RuncState)
    assert st == runc_state()


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1714564800_000000000, "2024-05-01T12:00:00Z"),
        (1714564800_500000000, "2024-05-01T12:00:00.5Z"),
        (1714564800_123456789, "2024-05-01T12:00:00.123456789Z"),
        (1714564800_000001000, "2024-05-01T12:00:00.000001Z"),
    ],
)
def test_rfc3339_nano(ns: int, text: str) -> None:
    assert rfc3339_nano(ns) == text


def test_go_json_escape() -> None:
    assert go_json_escape('{"a":"<b>&\u2028\u2029"}'.encode()) == (
        b'{"a":"\\u003cb\\u003e\\u0026\\u2028\\u2029"}'
    )
    assert go_json_escape(b'{"a":"plain"}') == b'{"a":"plain"}'


# --------------------------------------------------------------------------- seccomp agent message


def test_container_process_state_matches_spec_example() -> None:
    doc = {
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": 4422,
        "metadata": "MKNOD=/dev/null,/dev/net/tun;BPF_MAP_TYPES=hash,array",
        "state": {
            "ociVersion": "1.0.2",
            "id": "oci-container1",
            "status": "creating",
            "pid": 4422,
            "bundle": "/containers/redis",
            "annotations": {"myKey": "myValue"},
        },
    }
    msg = msgspec.json.decode(json.dumps(doc).encode(), type=ContainerProcessState)
    assert msg.fds == [SECCOMP_FD_NAME]
    assert msg.state.status == "creating"
    assert json.loads(encode_process_state(msg)) == doc
    assert list(json.loads(encode_process_state(msg))) == list(doc)


# --------------------------------------------------------------------------- features


def test_features_document_shape_and_order() -> None:
    doc = json.loads(
        ft.encode_features(
            ft.runtime_features(
                seccomp_supported_flags=["SECCOMP_FILTER_FLAG_LOG"],
                apparmor_enabled=True,
                selinux_enabled=False,
                annotations={"org.bulkhead.version": "0.1.0"},
            )
        )
    )
    assert list(doc) == [
        "ociVersionMin",
        "ociVersionMax",
        "hooks",
        "mountOptions",
        "linux",
        "annotations",
    ]
    assert doc["ociVersionMin"] == "1.0.0" and doc["ociVersionMax"] == "1.2.0"
    assert doc["hooks"] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    linux = doc["linux"]
    assert list(linux) == ["namespaces", "capabilities", "cgroup", "seccomp", "apparmor", "selinux"]
    assert linux["namespaces"] == [
        "cgroup",
        "ipc",
        "mount",
        "network",
        "pid",
        "time",
        "user",
        "uts",
    ]
    assert linux["capabilities"] == list(CAPABILITIES)
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    seccomp = linux["seccomp"]
    assert list(seccomp) == [
        "enabled",
        "actions",
        "operators",
        "archs",
        "knownFlags",
        "supportedFlags",
    ]
    assert "SCMP_ACT_NOTIFY" in seccomp["actions"]
    assert seccomp["actions"] == sorted(seccomp["actions"])
    assert "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert seccomp["knownFlags"] == list(SECCOMP_FLAGS)
    assert seccomp["supportedFlags"] == ["SECCOMP_FILTER_FLAG_LOG"]
    assert linux["apparmor"] == {"enabled": True}
    assert linux["selinux"] == {"enabled": False}
    assert doc["annotations"] == {"org.bulkhead.version": "0.1.0"}
    assert doc["mountOptions"] == sorted(ft.MOUNT_OPTIONS)
    assert "idmap" not in doc["mountOptions"]


def test_features_unknown_host_facts_are_left_out() -> None:
    linux = json.loads(ft.encode_features(ft.runtime_features()))["linux"]
    assert "apparmor" not in linux and "selinux" not in linux
    assert "supportedFlags" not in linux["seccomp"]
    assert "intelRdt" not in linux and "mountExtensions" not in linux


def test_features_capabilities_follow_last_cap() -> None:
    linux = ft.features_document(last_cap=37)["linux"]
    assert linux["capabilities"][-1] == "CAP_AUDIT_READ"
    assert len(linux["capabilities"]) == 38


def test_features_optional_extensions() -> None:
    doc = ft.features_document(
        idmap_mounts=True,
        intel_rdt=True,
        net_devices=True,
        cgroup_rdma=True,
        memory_policy=ft.MemoryPolicy(modes=["MPOL_BIND"], flags=["MPOL_F_STATIC_NODES"]),
        potentially_unsafe_config_annotations=["org.systemd.property."],
        seccomp_archs=["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
    )
    linux = doc["linux"]
    assert {"idmap", "ridmap"} <= set(doc["mountOptions"])
    assert linux["mountExtensions"] == {"idmap": {"enabled": True}}
    assert linux["intelRdt"] == {"enabled": True}
    assert linux["netDevices"] == {"enabled": True}
    assert linux["cgroup"]["rdma"] is True
    assert linux["memoryPolicy"] == {"modes": ["MPOL_BIND"], "flags": ["MPOL_F_STATIC_NODES"]}
    assert linux["seccomp"]["archs"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86_64"]
    assert doc["potentiallyUnsafeConfigAnnotations"] == ["org.systemd.property."]
    assert list(doc)[-1] == "potentiallyUnsafeConfigAnnotations"
    assert list(linux) == [
        "namespaces",
        "capabilities",
        "cgroup",
        "seccomp",
        "intelRdt",
        "memoryPolicy",
        "mountExtensions",
        "netDevices",
    ]


def test_features_seccomp_disabled_lists_nothing() -> None:
    linux = ft.features_document(seccomp_enabled=False, seccomp_supported_flags=["X"])["linux"]
    assert linux["seccomp"] == {"enabled": False}


def test_encode_features_is_four_space_indented_with_newline() -> None:
    data = ft.encode_features(ft.runtime_features(annotations={"k": "<v>"}))
    assert data.startswith(b'{\n    "ociVersionMin": "1.0.0",\n')
    assert data.endswith(b"}\n")
    assert b'"k": "\\u003cv\\u003e"' in data


def test_features_document_decodes_into_models() -> None:
    f = ft.runtime_features(apparmor_enabled=False, idmap_mounts=False)
    again = msgspec.json.decode(ft.encode_features(f), type=ft.Features)
    assert again == f
    assert again.linux is not None and again.linux.mount_extensions is not None
    assert again.linux.mount_extensions.idmap == ft.IDMap(enabled=False)
