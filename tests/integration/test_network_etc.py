"""The files a container sees (/etc/hosts, /etc/resolv.conf, /etc/hostname) with
``--add-host --dns --dns-search --dns-option -h --domainname``, through the stock
docker CLI, on the networks that need no bridge (``none``, ``host``)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    made: Daemon = daemon_factory()
    return made


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def test_etc_files_with_dns_flags_on_network_none(daemon: Daemon) -> None:
    out = ok(
        daemon.docker(
            "run", "--rm", "--network", "none", "-h", "box", "--domainname", "example.com",
            "--add-host", "db:10.0.0.9", "--add-host", "v6=[fd00::9]",
            "--dns", "10.0.0.1", "--dns-search", "a.example", "--dns-option", "ndots:2",
            "busybox", "sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; "
            "hostname; cat /etc/hostname",
        )
    )  # fmt: skip
    hosts, resolv, names = out.split("---\n")
    assert hosts == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::\tip6-localnet\n"
        "ff00::\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        "10.0.0.9\tdb\n"
        "fd00::9\tv6\n"
    )
    assert "\nnameserver 10.0.0.1\nsearch a.example\noptions ndots:2\n\n" in resolv
    assert "# Overrides: [nameservers search options]\n" in resolv
    assert names == "box\nbox\n"
    r = daemon.docker("run", "--rm", "--dns", "dns.example", "busybox", "true")
    assert r.returncode != 0 and "dns.example" in r.stderr
    r = daemon.docker("run", "--rm", "--add-host", "nocolon", "busybox", "true")
    assert r.returncode != 0 and "nocolon" in r.stderr


def test_host_network_keeps_the_host_files_unless_overridden(daemon: Daemon) -> None:
    out = ok(daemon.docker("run", "--rm", "--network", "host", "busybox", "cat", "/etc/hosts"))
    with open("/etc/hosts") as f:
        host = f.read()
    assert out in (host, host + "\n")
    out = ok(
        daemon.docker(
            "run", "--rm", "--network", "host", "--add-host", "db:10.0.0.9",
            "busybox", "cat", "/etc/hosts",
        )
    )  # fmt: skip
    assert out.startswith("127.0.0.1\tlocalhost\n") and out.endswith("10.0.0.9\tdb\n")
    out = ok(
        daemon.docker("run", "--rm", "--network", "host", "busybox", "cat", "/etc/resolv.conf")
    )
    assert "(legacy)" not in out and "# Based on host file: '/etc/resolv.conf'\n" in out
