"""The container store, names, signals, /etc files, runtimes and Docker's text helpers (no root)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bulkhead.engine import bundle
from bulkhead.engine.containers import (
    Container,
    ContainerStore,
    check_name,
    new_container_id,
    now_rfc3339,
    parse_rfc3339,
    random_name,
)
from bulkhead.engine.engine import parse_signal
from bulkhead.engine.runtimes import Runtimes
from bulkhead.errors import NameConflict, NoSuchContainer, SpecError
from bulkhead.units import human_duration


def make(store: ContainerStore, name: str, cid: str | None = None) -> Container:
    c = Container(id=cid or new_container_id(), name=name, created=now_rfc3339())
    store.add(c)
    return c


def test_add_get_by_id_name_and_prefix(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a = make(store, "alpha", "ab" + "0" * 62)
    b = make(store, "beta", "ac" + "1" * 62)
    assert store.get(a.id).name == "alpha"
    assert store.get("alpha").id == a.id
    assert store.get("/beta").id == b.id
    assert store.get("ab").id == a.id
    with pytest.raises(SpecError, match="multiple IDs found with provided prefix: a"):
        store.get("a")
    with pytest.raises(NoSuchContainer, match="No such container: gamma"):
        store.get("gamma")
    with pytest.raises(NoSuchContainer):
        store.get("")
    assert [c.name for c in store.list()] == ["beta", "alpha"]  # newest first
    assert store.ids() == {a.id, b.id}


def test_name_conflict_has_dockers_message(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a = make(store, "web")
    with pytest.raises(NameConflict) as exc:
        make(store, "web")
    assert str(exc.value) == (
        f'Conflict. The container name "/web" is already in use by container "{a.id}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    assert len(store.list()) == 1


def test_update_rename_remove_persist(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a = make(store, "one")
    make(store, "two")

    def exited(c: Container) -> None:
        c.state.status = "exited"
        c.state.exit_code = 3

    store.update(a.id, exited)
    with pytest.raises(NameConflict):
        store.rename(a.id, "two")
    with pytest.raises(SpecError, match="same name"):
        store.rename(a.id, "one")
    with pytest.raises(SpecError, match="Invalid container name"):
        store.rename(a.id, "bad name")
    store.rename(a.id, "uno")
    store.close()
    again = ContainerStore(tmp_path)  # state survives a reopen
    c = again.get("uno")
    assert (c.state.status, c.state.exit_code) == ("exited", 3)
    with pytest.raises(NoSuchContainer):
        again.get("one")
    again.remove(c.id)
    again.remove(c.id)  # twice is fine
    with pytest.raises(NoSuchContainer):
        again.update(c.id, exited)


def test_names() -> None:
    assert check_name("/web") == "web"
    assert check_name("a.b_c-d") == "a.b_c-d"
    for bad in ("", "x", "-x", "a b", "a/b", "é1"):
        with pytest.raises(SpecError, match="only \\[a-zA-Z0-9\\]"):
            check_name(bad)
    taken = {"x"}
    name = random_name(lambda n: n in taken)
    left, _, right = name.partition("_")
    assert left and right
    assert random_name(lambda n: True).startswith("bulkhead_")


def test_times() -> None:
    now = now_rfc3339()
    assert now.endswith("Z") and 20 <= len(now) <= 30 and now[19] in ".Z"
    assert parse_rfc3339("0001-01-01T00:00:00Z") == 0.0
    assert parse_rfc3339("2024-01-02T03:04:05.5Z") == pytest.approx(1704164645.5)
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(5) == "5 seconds"
    assert human_duration(70) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3700) == "About an hour"
    assert human_duration(3 * 86400) == "3 days"


def test_parse_signal() -> None:
    assert parse_signal("SIGTERM") == signal.SIGTERM
    assert parse_signal("term") == signal.SIGTERM
    assert parse_signal("9") == 9
    assert parse_signal(15) == 15
    assert parse_signal("RTMIN+1") == signal.SIGRTMIN + 1
    for bad in ("NOPE", "0", "999", ""):
        with pytest.raises(SpecError, match="Invalid signal"):
            parse_signal(bad)


def test_runtimes() -> None:
    rt = Runtimes("bulkhead", {"mine": "/opt/mine", "dockerish": {"path": "/opt/d"}})
    assert rt.resolve(None) == ("bulkhead", "bulkhead")
    assert rt.resolve("mine") == ("mine", "/opt/mine")
    assert rt.resolve("dockerish") == ("dockerish", "/opt/d")
    name, path = rt.resolve("runc")
    assert name == "runc" and path.endswith("runc")
    assert rt.resolve("bulkhead-runtime")[1].endswith("bulkhead-runtime")
    with pytest.raises(SpecError, match=r"^unknown or invalid runtime name: x$"):
        rt.resolve("x")
    with pytest.raises(SpecError, match="unknown or invalid runtime name: nope"):
        Runtimes("nope")
    assert rt.names()[0] == "bulkhead" and "mine" in rt.names()
    assert rt.info()["mine"] == {"path": "/opt/mine"}


def test_etc_hosts_text() -> None:
    hosts = bundle.hosts_text("none", ["db:10.1.2.3", "v6:[::1]"])
    assert hosts.startswith("127.0.0.1\tlocalhost\n")
    assert hosts.endswith("10.1.2.3\tdb\n::1\tv6\n")
    with pytest.raises(SpecError, match="add-host"):
        bundle.hosts_text("none", ["nocolon"])
    assert bundle.resolv_conf_mode("host") == "host"
    assert bundle.resolv_conf_mode("none") == "legacy"
    assert bundle.resolv_conf_mode("mynet", ["172.18.0.1"]) == "internal"
    assert bundle.container_hostname("none", None, None, "a" * 64) == "a" * 12
    assert bundle.container_hostname("none", None, "box", "a" * 64) == "box"


def test_merge_mounts_order_and_override(tmp_path: Path) -> None:
    paths = bundle.ContainerPaths(tmp_path, "c" * 64)
    defaults = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
    ]
    user = [
        {"destination": "/data/sub", "type": "bind", "source": "/x"},
        {"destination": "/dev/shm", "type": "bind", "source": "/y"},
        {"destination": "/etc/hosts", "type": "bind", "source": "/z"},
    ]
    etc = [m for m in bundle.etc_mounts(paths, read_only=True) if m["destination"] != "/etc/hosts"]
    merged = bundle.merge_mounts(defaults, user, etc)
    dests = [m["destination"] for m in merged]
    assert dests[0] == "/proc"
    assert dests.count("/dev/shm") == 1 and dests.count("/etc/hosts") == 1
    assert merged[dests.index("/dev/shm")]["source"] == "/y"
    assert dests.index("/data/sub") > dests.index("/etc/resolv.conf")
    assert all("ro" in m["options"] for m in etc)


def test_inline_seccomp_profile() -> None:
    from bulkhead.engine.options import RunOptions
    from bulkhead.engine.spec import _custom_profile

    prof = _custom_profile('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert prof == {"defaultAction": "SCMP_ACT_ALLOW"}
    with pytest.raises(SpecError, match="invalid seccomp profile JSON"):
        _custom_profile("{nope")
    assert RunOptions(security_opt=['seccomp={"defaultAction": "SCMP_ACT_ALLOW"}'])


def test_merged_config_follows_dockers_rules() -> None:
    from bulkhead.engine.engine import merged_config
    from bulkhead.images.store import Image

    image = Image(
        id="sha256:" + "0" * 64,
        manifest_digest="",
        target="",
        created="",
        size=0,
        config={
            "config": {
                "Env": ["PATH=/bin", "A=1"],
                "Cmd": ["sh"],
                "Entrypoint": ["/init"],
                "WorkingDir": "/w",
                "Labels": {"from": "image", "both": "image"},
                "Volumes": {"/data": {}},
                "StopSignal": "SIGQUIT",
            }
        },
        manifest={},
    )
    out = merged_config(image, {"Image": "x", "Env": ["A=2", "B=3"], "Labels": {"both": "me"}}, "h")
    assert out["Env"] == ["PATH=/bin", "A=2", "B=3"]
    assert (out["Entrypoint"], out["Cmd"]) == (["/init"], ["sh"])
    assert out["WorkingDir"] == "/w" and out["StopSignal"] == "SIGQUIT"
    assert out["Labels"] == {"from": "image", "both": "me"}
    assert out["Volumes"] == {"/data": {}}
    assert out["Hostname"] == "h" and out["Image"] == "x"
    # a Cmd of the user's keeps the image's entrypoint; an entrypoint of the user's drops Cmd
    assert merged_config(image, {"Cmd": ["ls"]}, "h")["Entrypoint"] == ["/init"]
    own = merged_config(image, {"Entrypoint": ["/bin/echo"]}, "h")
    assert (own["Entrypoint"], own.get("Cmd")) == (["/bin/echo"], None)


def test_list_filter_checks_and_until() -> None:
    import time

    from bulkhead.engine.engine import _check_filters, _label_match, _parse_until

    _check_filters({"status": ["running", "exited"], "exited": ["0", "-1"], "label": ["a"]})
    for bad, msg in (
        ({"status": ["up"]}, "status=up"),
        ({"exited": ["x"]}, "exited=x"),
        ({"colour": ["red"]}, "'colour'"),
    ):
        with pytest.raises(SpecError, match=msg):
            _check_filters(bad)
    assert _label_match({"a": "1"}, "a") and _label_match({"a": "1"}, "a=1")
    assert not _label_match({"a": "1"}, "a=2") and not _label_match({}, "a")
    assert _parse_until("1700000000") == 1700000000.0
    assert abs(_parse_until("1h30m") - (time.time() - 5400)) < 5
    assert _parse_until("2024-01-02T03:04:05Z") == pytest.approx(1704164645.0)


def test_go_file_modes() -> None:
    import stat as st

    from bulkhead.engine.filesystem import go_file_mode

    assert go_file_mode(st.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_file_mode(st.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(st.S_IFREG | 0o4755) == (1 << 23) | 0o755
    assert go_file_mode(st.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(st.S_IFDIR | 0o1777) == (1 << 31) | (1 << 20) | 0o777


def test_restart_backoff_is_moby_restartmanager() -> None:
    """100 ms doubling up to 1 min; a run of >= 10 s begins again at 100 ms (not at the count)."""
    from types import SimpleNamespace

    from bulkhead.engine.engine import Engine

    engine = SimpleNamespace(_backoff={})

    def backoff(ran: float, cid: str = "c") -> float:
        return Engine._next_backoff(engine, cid, ran)  # type: ignore[arg-type]

    waits = [backoff(0.01) for _ in range(12)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60.0, 60.0]
    assert backoff(9.99) == 60.0
    assert [backoff(10.0), backoff(1), backoff(1)] == [0.1, 0.2, 0.4]  # reset, then doubling anew
    assert backoff(0, "other") == 0.1  # per container
