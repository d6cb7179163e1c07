"""The capability table and the parent-side translation of runtime-spec lists to masks."""

from __future__ import annotations

import logging

import pytest

from bulkhead.errors import SpecError
from bulkhead.linux import capabilities as caps

# Docker's 14 default capabilities (moby oci/caps/defaults.go).
DOCKER_DEFAULTS = [
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


def test_table_is_contiguous_and_complete() -> None:
    assert sorted(caps.CAPABILITIES.values()) == list(range(41))
    assert caps.CAP_LAST_KNOWN == 40
    assert caps.CAPABILITIES["CAP_CHOWN"] == 0
    assert caps.CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert caps.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert all(name.startswith("CAP_") and name.isupper() for name in caps.CAPABILITIES)
    assert {v: k for k, v in caps.CAPABILITIES.items()} == caps.CAPABILITY_NAMES


def test_number_and_unknown_name() -> None:
    assert caps.capability_number("CAP_NET_RAW") == 13
    with pytest.raises(SpecError, match="CAP_NET_RAWW"):
        caps.capability_number("CAP_NET_RAWW")
    with pytest.raises(SpecError):
        caps.capability_number("net_raw")  # names are exact, as in the runtime-spec


def test_mask_and_names_round_trip() -> None:
    mask = caps.mask_of(DOCKER_DEFAULTS)
    assert mask == 0xA80425FB  # Docker's default CapEff as /proc shows it
    assert sorted(caps.names_of(mask)) == sorted(DOCKER_DEFAULTS)
    assert caps.names_of(0) == []
    assert caps.names_of(1 << 40 | 1) == ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"]
    assert caps.names_of(1 << 45) == ["CAP_45"]


def test_all_capabilities() -> None:
    assert caps.all_capabilities(40) == 0x1FFFFFFFFFF
    assert caps.all_capabilities(0) == 1
    assert caps.all_capabilities() == (1 << (caps.last_cap() + 1)) - 1


def test_last_cap_matches_proc() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())


def test_sets_from_spec() -> None:
    sets = caps.capability_sets_from_spec(
        bounding=DOCKER_DEFAULTS,
        effective=DOCKER_DEFAULTS,
        permitted=DOCKER_DEFAULTS,
        ambient=["CAP_NET_BIND_SERVICE"],
        inheritable=["CAP_NET_BIND_SERVICE"],
        last=40,
    )
    assert sets.bounding == sets.effective == sets.permitted == 0xA80425FB
    assert sets.ambient == sets.inheritable == 1 << 10
    spec = sets.to_spec()
    assert spec["ambient"] == ["CAP_NET_BIND_SERVICE"]
    assert sorted(spec["bounding"]) == sorted(DOCKER_DEFAULTS)


def test_sets_default_to_empty() -> None:
    assert caps.capability_sets_from_spec() == caps.CapabilitySets(0, 0, 0, 0, 0)


def test_unknown_name_is_a_spec_error_naming_it_and_where() -> None:
    with pytest.raises(SpecError) as info:
        caps.capability_sets_from_spec(
            bounding=["CAP_CHOWN"], effective=["CAP_CHOWN", "CAP_FLY"], last=40
        )
    assert "CAP_FLY" in str(info.value)
    assert info.value.where == "$.process.capabilities.effective[1]"


def test_names_the_kernel_does_not_know_are_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bulkhead.linux.capabilities"):
        sets = caps.capability_sets_from_spec(
            bounding=["CAP_CHOWN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"],
            permitted=["CAP_BPF"],
            last=38,  # a kernel that stops at CAP_PERFMON (5.8)
        )
    assert sets.bounding == 1 << 0
    assert sets.permitted == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "CAP_BPF" in warnings[0].getMessage()
    assert "CAP_CHECKPOINT_RESTORE" in warnings[0].getMessage()


def test_no_warning_when_everything_is_known(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bulkhead.linux.capabilities"):
        caps.capability_sets_from_spec(bounding=list(caps.CAPABILITIES), last=40)
    assert not caplog.records


STATUS = """\
Name:\tcat
Umask:\t0022
State:\tR (running)
CapInh:\t0000000000000000
CapPrm:\t00000000a80425fb
CapEff:\t00000000a80425fb
CapBnd:\t00000000a80425fb
CapAmb:\t0000000000000400
NoNewPrivs:\t0
"""


def test_parse_status() -> None:
    sets = caps.parse_status(STATUS)
    assert sets == caps.CapabilitySets(
        bounding=0xA80425FB,
        effective=0xA80425FB,
        inheritable=0,
        permitted=0xA80425FB,
        ambient=0x400,
    )


def test_current_agrees_with_capget() -> None:
    now = caps.current()
    assert caps.capget() == (now.effective, now.permitted, now.inheritable)
