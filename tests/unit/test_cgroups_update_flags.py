"""``bulkhead-runtime update``'s flags and ``--resources`` file: bad values name the spec field.

Only the parsing (:func:`bulkhead.runtime.update.resources_from_cli`); the
host-side checks are the cgroup managers' (test_cgroups_*), the command end
to end is tests/integration/test_cgroups_bad_input.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bulkhead.errors import SpecError, UnsupportedError
from bulkhead.runtime.update import FLAG_FIELDS, resources_from_cli

FLAGS = (*FLAG_FIELDS, "l3-cache-schema", "mem-bw-schema")


def args(resources: str = "", **flags: str) -> Any:
    values: dict[str, Any] = {name.replace("-", "_"): None for name in FLAGS}
    values.update(flags)
    return SimpleNamespace(resources=resources, **values)


def test_flags_set_their_fields() -> None:
    r = resources_from_cli(
        args(
            memory="512m",
            memory_swap="-1",
            cpu_share="2048",
            cpu_quota="-1",
            cpuset_cpus="0-1",
            pids_limit="-1",
            blkio_weight="300",
        )
    )
    assert r.memory.limit == 512 << 20 and r.memory.swap == -1
    assert r.cpu.shares == 2048 and r.cpu.quota == -1 and r.cpu.cpus == "0-1"
    assert r.pids.limit == -1 and r.block_io.weight == 300
    assert r.network is None and r.unified is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"memory": "-5"}, r"^linux\.resources\.memory\.limit \(--memory\): '-5' is not a size"),
        ({"memory": "abc"}, r"^linux\.resources\.memory\.limit \(--memory\): 'abc' is not a size"),
        ({"memory_swap": "1q"}, r"^linux\.resources\.memory\.swap \(--memory-swap\): '1q'"),
        ({"memory": "99999999999g"}, r"^linux\.resources\.memory\.limit .*not a size"),
        ({"cpu_share": "x"}, r"^linux\.resources\.cpu\.shares \(--cpu-share\): 'x' is not an int"),
        (
            {"cpu_share": "-5"},
            r"^linux\.resources\.cpu\.shares \(--cpu-share\): -5: Expected `int` >= 0",
        ),
        ({"cpu_period": "-1"}, r"^linux\.resources\.cpu\.period \(--cpu-period\): -1: Expected"),
        (
            {"blkio_weight": "70000"},
            r"^linux\.resources\.blockIO\.weight \(--blkio-weight\): 70000",
        ),
        ({"pids_limit": "1.5"}, r"^linux\.resources\.pids\.limit \(--pids-limit\): '1\.5' is not"),
    ],
)
def test_bad_flags_name_the_field(flags: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        resources_from_cli(args(**flags))
    assert "\n" not in str(info.value)


def test_intel_rdt_flags_are_refused() -> None:
    with pytest.raises(UnsupportedError, match=r"^--l3-cache-schema: Intel RDT"):
        resources_from_cli(args(l3_cache_schema="L3:0=f"))


def test_resources_file(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text('{"memory": {"limit": 1048576}, "rdma": {"mlx5_0": {"hcaHandles": 3}}}')
    r = resources_from_cli(args(resources=str(f)))
    assert r.memory.limit == 1 << 20 and r.rdma["mlx5_0"].hca_handles == 3
    for text, message in [
        ('{"cpu": {"shares": -3}}', r"linux\.resources\.cpu\.shares: -3: Expected `int` >= 0"),
        (
            '{"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": "x"}]}}',
            r"linux\.resources\.blockIO\.throttleReadBpsDevice\[0\]\.rate: 'x': Expected `int`",
        ),
        ('{"memory": {"limit": "1g"}}', r"linux\.resources\.memory\.limit: '1g': Expected"),
        ("{nope", r"--resources .*r\.json: "),
    ]:
        f.write_text(text)
        with pytest.raises(
            SpecError,
            match=r"^--resources \S+: " + message.removeprefix("--resources .*r\\.json: "),
        ):
            resources_from_cli(args(resources=str(f)))
    with pytest.raises(SpecError, match=r"^--resources /nonexistent: "):
        resources_from_cli(args(resources="/nonexistent"))
