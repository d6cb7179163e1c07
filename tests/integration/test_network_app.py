"""Issue 7's "done when": the stock docker CLI runs a two-container app on bulkhead.

The daemon runs in a network namespace of the test's own
(``daemon_factory(netns=True)``), which also gets an interface (one end of a veth pair) with
``10.252.0.1/24``: "the namespace's address", the one a neighbour would use.
With the stock ``docker`` CLI only:

- ``docker network create app``;
- a server, busybox ``httpd -f -p 80 -h /www`` with a page, on ``app`` with
  ``--network-alias web`` and ``-p 8080:80``;
- a client on the same network fetching ``http://web/`` and
  ``http://<server name>/`` by name (busybox ``wget``): the daemon's DNS;
- the published port from the daemon's namespace, on ``127.0.0.1:8080`` and on
  ``10.252.0.1:8080``;
- ``docker rm -f``, ``docker network rm``: the namespace's links, addresses,
  nft tables and rules are what they were before the app (the default bridge the
  daemon made at its start stays: it is the daemon's, not the app's).

Traffic flows only inside that namespace. :func:`test_two_container_app_compose`
runs the same app from a compose file, with the ``docker compose`` plugin where
it exists, else Debian's ``docker-compose`` 1.29 (``make test`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]

NS_IP = "10.252.0.1"
PAGE = "hello from the app server"
SERVER = f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 80 -h /www"
#: A bounded wait in the client itself: the server may still be starting httpd.
#: (``timeout``, not wget's ``-T``: Debian's busybox 1.35 wget segfaults with ``-T``.)
CLIENT = (
    "for i in $(seq 100); do timeout 5 wget -q -O /tmp/page http://$1/ && exec cat /tmp/page; "
    "sleep 0.1; done; echo no answer from $1 >&2; exit 1"
)
FETCH = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode(errors="replace").rpartition("\r\n\r\n")[2].strip())
"""


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr}"
    return r.stdout


def netns_state(d: Daemon) -> dict[str, Any]:
    """The namespace's links, addresses, nft tables and rules (what the app must leave as it
    found)."""
    addrs = json.loads(ok(d.in_netns("ip", "-j", "addr")) or "[]")
    tables = json.loads(ok(d.in_netns("nft", "-j", "list", "tables")) or "{}")
    return {
        "links": sorted(str(link["ifname"]) for link in d.links()),
        "addresses": sorted(
            f"{a['ifname']} {i['local']}/{i['prefixlen']}"
            for a in addrs
            for i in a.get("addr_info", [])
            if i.get("scope") != "link"
        ),
        "nft tables": sorted(
            f"{t['table']['family']} {t['table']['name']}"
            for t in tables.get("nftables", [])
            if "table" in t
        ),
        "nft ruleset": ok(d.in_netns("nft", "list", "ruleset")),
    }


def fetch(d: Daemon, host: str, port: int) -> str:
    return ok(d.in_netns(sys.executable, "-c", FETCH, host, str(port))).strip()


@pytest.fixture
def app_daemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(netns=True)
    # (no dummy driver in this kernel: a veth pair with both ends in the namespace)
    ok(d.in_netns("ip", "link", "add", "ns0", "type", "veth", "peer", "name", "ns0p"))
    ok(d.in_netns("ip", "addr", "add", f"{NS_IP}/24", "dev", "ns0"))
    ok(d.in_netns("ip", "link", "set", "ns0", "up"))
    ok(d.in_netns("ip", "link", "set", "ns0p", "up"))
    return d


def check_app(d: Daemon, server: str, net: str) -> None:
    """The client reaches the server by alias and by name; the port is published."""
    for name in ("web", server):
        got = ok(
            d.docker("run", "--rm", "--network", net, "busybox", "sh", "-c", CLIENT, "-", name)
        )
        assert got.strip() == PAGE, name
    assert fetch(d, "127.0.0.1", 8080) == PAGE
    assert fetch(d, NS_IP, 8080) == PAGE
    assert "0.0.0.0:8080" in ok(d.docker("port", server, "80"))


def test_two_container_app_by_name_with_a_published_port(app_daemon: Daemon) -> None:
    d = app_daemon
    before = netns_state(d)
    net_id = ok(d.docker("network", "create", "app")).strip()
    assert len(net_id) == 64
    server = "app-server"
    ok(
        d.docker(
            "run", "-d", "--name", server, "--network", "app", "--network-alias", "web",
            "-p", "8080:80", "busybox", "sh", "-c", SERVER,
        )
    )  # fmt: skip
    during = netns_state(d)
    assert len(during["links"]) > len(before["links"])  # the app's bridge and the server's veth
    assert "8080" in during["nft ruleset"]
    check_app(d, server, "app")
    info = json.loads(ok(d.docker("inspect", server)))[0]
    endpoint = info["NetworkSettings"]["Networks"]["app"]
    assert endpoint["NetworkID"] == net_id
    assert "web" in endpoint["Aliases"]

    ok(d.docker("rm", "-f", server))
    ok(d.docker("network", "rm", "app"))
    assert "app" not in ok(d.docker("network", "ls", "--format", "{{.Name}}")).split()
    deadline = time.monotonic() + 10
    while netns_state(d) != before and time.monotonic() < deadline:
        time.sleep(0.1)  # a veth's peer goes with the container's namespace, asynchronously
    assert netns_state(d) == before


def compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) where it exists, else Debian's ``docker-compose``
    (1.29, Python, docker-py: installed by ``make test``), else None."""
    if DOCKER is not None:
        r = subprocess.run([DOCKER, "compose", "version"], capture_output=True, check=False)
        if r.returncode == 0:
            return [DOCKER, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


COMPOSE = f"""
services:
  server:
    image: busybox
    container_name: app-server
    command: ["sh", "-c", "{SERVER}"]
    ports: ["8080:80"]
    networks:
      app:
        aliases: [web]
  client:
    image: busybox
    depends_on: [server]
    command: ["sh", "-c", "{CLIENT.replace("$", "$$")}", "-", "web"]
    networks: [app]
networks:
  app: {{}}
"""


def exited_0(ps: str) -> bool:
    """``compose ps`` says the service exited 0 (v1: ``Exit 0``, v2: ``Exited (0)``)."""
    return "Exit 0" in ps or "Exited (0)" in ps


@pytest.mark.skipif(compose_command() is None, reason="docker compose is not installed")
def test_two_container_app_compose(app_daemon: Daemon, tmp_path: Path) -> None:
    d = app_daemon
    before = netns_state(d)
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    compose = compose_command()
    assert compose is not None

    def run(*args: str) -> str:
        argv = [*compose, "-p", "bhapp", "-f", str(tmp_path / "compose.yaml"), *args]
        r = subprocess.run(argv, env=d.env(), capture_output=True, text=True, timeout=180)
        return ok(r)

    run("up", "-d")
    check_app(d, "app-server", "bhapp_app")
    # the client service fetched the server's page by its alias, then exited 0
    deadline = time.monotonic() + 60
    while not exited_0(ps := run("ps", "-a", "client")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exited_0(ps), ps
    assert PAGE in run("logs", "--no-color", "client")
    run("down")
    deadline = time.monotonic() + 10
    while netns_state(d) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert netns_state(d) == before
