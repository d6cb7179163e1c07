"""``GET /networks`` filters as moby's ``FilterNetworks``: Match (regexp), dangling, type."""

from __future__ import annotations

import pytest

from bulkhead.api.errors import BadRequest
from bulkhead.api.networks import _matches
from bulkhead.network.store import Network

NET = Network(id="ab12" + "0" * 60, name="front-end", bridge="br-x")
BRIDGE = Network(id="cd34" + "0" * 60, name="bridge", bridge="bh0", predefined=True)


def test_name_and_id_are_regular_expressions_found_anywhere() -> None:
    assert _matches(NET, {"name": ["end"]}, set())
    assert _matches(NET, {"name": ["^front-"]}, set())
    assert not _matches(NET, {"name": ["^end"]}, set())
    assert _matches(NET, {"id": ["b12"]}, set())  # moby: a regexp, not a prefix
    assert _matches(NET, {"id": [NET.id]}, set())
    # an invalid expression matches nothing (no 500)
    assert not _matches(NET, {"name": ["front("]}, set())
    assert _matches(NET, {"name": ["front(", "front"]}, set())


def test_dangling_counts_running_containers_only_and_moby_words() -> None:
    # ``attached``: networks with active endpoints (the caller leaves stopped ones out)
    assert _matches(NET, {"dangling": ["true"]}, set())
    assert not _matches(NET, {"dangling": ["1"]}, {NET.id})
    assert _matches(NET, {"dangling": ["false"]}, {NET.id})
    assert not _matches(BRIDGE, {"dangling": ["true"]}, set())  # pre-defined: never dangling
    with pytest.raises(BadRequest) as err:
        _matches(NET, {"dangling": ["True"]}, set())
    assert str(err.value) == (
        'invalid value for filter \'dangling\', must be "true" (or "1"), or "false" (or "0")'
    )
    with pytest.raises(BadRequest, match='more than one value for filter key "dangling"'):
        _matches(NET, {"dangling": ["true", "false"]}, set())


def test_type_and_driver() -> None:
    assert _matches(BRIDGE, {"type": ["builtin"]}, set())
    assert _matches(NET, {"type": ["custom"]}, set())
    assert not _matches(NET, {"driver": ["bridg"]}, set())  # driver: exact
    with pytest.raises(BadRequest, match="invalid filter: 'type'='x'"):
        _matches(NET, {"type": ["x"]}, set())
