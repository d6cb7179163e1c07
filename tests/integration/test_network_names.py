"""Name resolution through the daemon in a network namespace of the test's own:
/etc/hosts on the default bridge (own address, --add-host host-gateway, legacy
--link), and the embedded resolver of user-defined networks.

Every daemon runs in ``bh-t-<random>`` (``daemon_factory(netns=True)``); the
"outside" resolver is a fake one in that namespace: no query leaves it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return str(r.stdout)


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(d.docker("inspect", ref)))[0]
    return doc


@pytest.fixture
def ndaemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(netns=True)
    return d


def test_default_bridge_hosts_links_and_host_gateway(ndaemon: Daemon) -> None:
    d = ndaemon
    db = ok(d.docker("run", "-d", "--name", "db", "-h", "dbhost", "busybox", "sleep", "100"))
    db_ip = inspect(d, db.strip())["NetworkSettings"]["IPAddress"]
    out = ok(
        d.docker(
            "run", "--name", "web", "--link", "db:dbalias", "--add-host", "gw:host-gateway",
            "busybox", "sh", "-c",
            "cat /etc/hosts; echo ---; ping -c1 -W5 dbalias >/dev/null && echo reached; "
            "echo ---; cat /etc/resolv.conf",
        )
    )  # fmt: skip
    hosts, ping, resolv = out.split("---\n")
    web = inspect(d, "web")
    own = web["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert hosts.endswith(
        "ff02::2\tip6-allrouters\n"
        "172.17.0.1\tgw\n"
        f"{db_ip}\tdbalias dbhost db\n"
        f"{own}\t{web['Id'][:12]}\n"
    )
    assert ping == "reached\n"
    assert "(legacy)" in resolv  # the default bridge has no embedded resolver
    assert web["HostConfig"]["Links"] == ["/db:/web/dbalias"]
    r = d.docker("run", "--rm", "--link", "nope:x", "busybox", "true")
    assert r.returncode == 125 and "could not get container for nope" in r.stderr
    assert "Unable to find image" not in r.stderr  # a 400: the CLI does not try a pull
    ok(d.docker("stop", "-t", "0", "db"))
    r = d.docker("start", "web")
    assert r.returncode != 0 and "Cannot link to a non running container: /db AS /web/dbalias" in (
        r.stderr
    )
