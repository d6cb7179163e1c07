"""The test suite's safety catch: no interface may be made in the test process's (the host's) netns."""

from __future__ import annotations

import os

import pytest

from bulkhead.errors import BulkheadError
from bulkhead.network.manager import NetworkManager


def test_the_suite_names_its_own_namespace() -> None:
    assert os.environ["BULKHEAD_FORBID_NETNS"] == str(os.stat("/proc/self/ns/net").st_ino)


def test_the_manager_refuses_in_the_forbidden_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKHEAD_FORBID_NETNS", str(os.stat("/proc/self/ns/net").st_ino))
    with pytest.raises(BulkheadError, match="host's network namespace"):
        NetworkManager._guard()


def test_the_manager_goes_on_in_another_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKHEAD_FORBID_NETNS", "1")  # no namespace has inode 1
    NetworkManager._guard()
    monkeypatch.delenv("BULKHEAD_FORBID_NETNS")
    NetworkManager._guard()
