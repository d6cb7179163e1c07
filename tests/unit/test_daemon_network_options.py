"""dockerd's network options of the daemon: bip, fixed-cidr, default-address-pools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulkhead.daemon import ConfigError, load_config


def conf(tmp_path: Path, doc: dict[str, object]) -> list[str]:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(doc))
    return ["--config-file", str(path)]


def test_daemon_json_and_flags(tmp_path: Path) -> None:
    doc: dict[str, object] = {
        "bip": "10.9.0.1/24",
        "fixed-cidr": "10.9.0.128/25",
        "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}],
    }
    config = load_config(conf(tmp_path, doc))
    assert (config.bip, config.fixed_cidr) == ("10.9.0.1/24", "10.9.0.128/25")
    assert config.default_address_pools == [("10.10.0.0/16", 24)]
    config = load_config(
        [*conf(tmp_path, {}), "--bip", "10.8.0.1/16", "--default-address-pool",
         "base=10.20.0.0/16,size=26", "--default-address-pool", "base=10.21.0.0/16,size=24"]
    )  # fmt: skip
    assert config.bip == "10.8.0.1/16" and config.fixed_cidr == ""
    assert config.default_address_pools == [("10.20.0.0/16", 26), ("10.21.0.0/16", 24)]


@pytest.mark.parametrize(
    ("doc", "args", "message"),
    [
        ({"bip": "10.9.0.0/24"}, [], "invalid bip '10.9.0.0/24'"),
        ({"bip": "10.9.0.1"}, [], "invalid bip"),
        ({"bip": "fd00::1/64"}, [], "invalid bip"),
        ({}, ["--bip", "nonsense"], "invalid bip"),
        ({"fixed-cidr": "10.9.0/24"}, [], "invalid fixed-cidr"),
        ({"bip": "10.9.0.1/24", "fixed-cidr": "10.8.0.0/25"}, [], "not within the bip subnet"),
        ({"default-address-pools": [{"base": "10.0.0.0/8", "size": 4}]}, [], "pool size 4"),
        ({"default-address-pools": [{"base": "fd00::/48", "size": 64}]}, [], "IPv6"),
        ({"default-address-pools": [{"base": "10.0.0.0/8"}]}, [], "size: expected int"),
        ({"default-address-pools": [{"base": "10.0.0.0/8", "size": 24, "x": 1}]}, [], "x"),
        ({}, ["--default-address-pool", "base=10.0.0.0/8"], "expected base=CIDR,size=N"),
    ],
)
def test_bad_values_name_the_option(
    tmp_path: Path, doc: dict[str, object], args: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([*conf(tmp_path, doc), *args])
    assert message in str(err.value)
