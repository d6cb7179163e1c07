"""The image endpoints' parsing, filters, progress messages and handlers (no registry, no root)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bulkhead.api import images as api
from bulkhead.api.errors import BadRequest, status_for
from bulkhead.api.routes import BodyStream, Request, Response, Router, StreamResponse
from bulkhead.engine.context import DaemonConfig, Services
from bulkhead.engine.events import EventBus
from bulkhead.images import archive
from bulkhead.images.auth import Credentials
from bulkhead.images.progress import (
    PullProgress,
    PushProgress,
    human_size,
    progress_bar,
    pull_status,
)
from bulkhead.images.registry import Progress
from bulkhead.images.store import ImageStore

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


# --- credentials and registry settings ------------------------------------------------


def _b64url(doc: dict[str, Any], pad: bool = True) -> str:
    text = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    return text if pad else text.rstrip("=")


def test_decode_auth() -> None:
    doc = {"username": "alice", "password": "pw?>", "serveraddress": "127.0.0.1:5000"}
    expected = Credentials(username="alice", password="pw?>")
    assert api.decode_auth(_b64url(doc)) == expected
    assert api.decode_auth(_b64url(doc, pad=False)) == expected
    assert api.decode_auth(base64.b64encode(json.dumps(doc).encode()).decode()) == expected
    packed = {"auth": base64.b64encode(b"bob:x:y").decode()}
    assert api.decode_auth(_b64url(packed)) == Credentials(username="bob", password="x:y")
    assert api.decode_auth(_b64url({"identitytoken": "tok"})) == Credentials(identity_token="tok")
    assert api.decode_auth(None) is None
    assert api.decode_auth("") is None
    assert api.decode_auth(_b64url({})) is None  # what the CLI sends without a login
    with pytest.raises(BadRequest, match="X-Registry-Auth"):
        api.decode_auth("!!!not base64!!!")
    with pytest.raises(BadRequest, match="X-Registry-Auth"):
        api.decode_auth(base64.urlsafe_b64encode(b"[1, 2]").decode())


def test_registry_config_and_server_host() -> None:
    cfg = api.registry_config(
        ["10.1.0.0/16", "myreg.example:5000", "http://other.example", "fd00::/8"],
        ["http://127.0.0.1:5001"],
    )
    assert cfg.is_insecure("10.1.2.3:5000") and cfg.is_insecure("10.1.2.3")
    assert not cfg.is_insecure("10.2.0.1:5000")
    assert cfg.is_insecure("myreg.example:5000") and not cfg.is_insecure("myreg.example:5001")
    assert cfg.is_insecure("other.example")
    assert cfg.is_insecure("[fd00::1]:5000")
    assert cfg.is_insecure("localhost:5000") and cfg.is_insecure("127.0.0.5:80")  # as Docker
    assert not cfg.is_insecure("registry-1.docker.io")
    assert cfg.endpoints("10.1.0.9:5000")[0].base_url == "http://10.1.0.9:5000"
    assert [e.base_url for e in cfg.endpoints("docker.io")] == [
        "http://127.0.0.1:5001",
        "https://registry-1.docker.io",
    ]
    with pytest.raises(BadRequest, match="insecure-registries"):
        api.registry_config(["10.0.0.0/99"], [])
    assert api.server_host("https://index.docker.io/v1/") == "docker.io"
    assert api.server_host("") == "docker.io"
    assert api.server_host("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert api.server_host("myreg:5000") == "myreg:5000"


def test_path_match_is_go_path_match() -> None:
    assert api.path_match("busy*", "busybox")
    assert api.path_match("busybox:*", "busybox:latest")
    assert not api.path_match("*", "team/app")  # * does not cross /
    assert api.path_match("*/*", "team/app")
    assert api.path_match("b?sybox", "busybox")
    assert api.path_match("[ab]usybox", "busybox") and not api.path_match("[!b]usybox", "busybox")
    assert api.path_match("x\\*", "x*") and not api.path_match("x\\*", "xy")
    with pytest.raises(BadRequest):
        api.path_match("[abc", "a")


# --- progress messages -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pull_progress_messages() -> None:
    out: list[dict[str, Any]] = []
    clock = Clock()
    p = PullProgress(out.append, "library/busybox", "latest", clock=clock)
    assert not p.is_started
    p(Progress("sha256:" + "c" * 64, CONFIG, "done", 10, 10))  # the config: no line
    p(Progress(D1, LAYER, "exists", 5, 5))
    p(Progress(D2, LAYER, "downloading", 100, 1000))
    p(Progress(D2, LAYER, "downloading", 200, 1000))  # within the interval: dropped
    clock.now = 1.0
    p(Progress(D2, LAYER, "downloading", 1000, 1000))
    p(Progress(D2, LAYER, "done", 1000, 1000))
    assert p.downloaded() == [D2]
    p.extracting()
    p.finished("sha256:" + "f" * 64)
    out.append(pull_status("busybox:latest", False))
    assert out[0] == {"status": "Pulling from library/busybox", "id": "latest"}
    assert out[1] == {"status": "Already exists", "progressDetail": {}, "id": "111111111111"}
    assert out[2] == {"status": "Pulling fs layer", "progressDetail": {}, "id": "222222222222"}
    assert out[3]["status"] == "Downloading"
    assert out[3]["progressDetail"] == {"current": 100, "total": 1000}
    assert out[3]["progress"].startswith("[=====>")
    assert out[4]["progressDetail"] == {"current": 1000, "total": 1000}
    assert [m["status"] for m in out[5:]] == [
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Pull complete",
        "Digest: sha256:" + "f" * 64,
        "Status: Downloaded newer image for busybox:latest",
    ]
    assert out[8]["id"] == "222222222222"  # only the downloaded layer is "Pull complete"
    assert pull_status("x:1", True) == {"status": "Status: Image is up to date for x:1"}


def test_push_progress_messages() -> None:
    out: list[dict[str, Any]] = []
    p = PushProgress(out.append, clock=Clock())
    p.preparing("127.0.0.1:5000/bb", [D1, D2])
    p(Progress(D1, LAYER, "exists", 5, 5))
    p(Progress(D2, LAYER, "uploading", 0, 10))
    p(Progress(D2, LAYER, "done", 10, 10))
    p.finished("1", "sha256:" + "e" * 64, 527)
    assert [m.get("status") for m in out] == [
        "The push refers to repository [127.0.0.1:5000/bb]",
        "Preparing",
        "Preparing",
        "Layer already exists",
        "Pushing",
        "Pushed",
        "1: digest: sha256:" + "e" * 64 + " size: 527",
        None,
    ]
    assert out[-1]["aux"] == {"Tag": "1", "Digest": "sha256:" + "e" * 64, "Size": 527}


def test_sizes_and_bars() -> None:
    assert human_size(999) == "999B"
    assert human_size(2_155_000) == "2.155MB"
    assert progress_bar(0, 100).startswith("[>" + " " * 50 + "]")
    assert progress_bar(100, 100).startswith("[" + "=" * 50 + ">]")
    assert progress_bar(5, 0) == "5B"


# --- handlers over a real image store ----------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class FakeEngine:
    def __init__(self) -> None:
        self.running: set[str] = set()
        self.events = EventBus()

    def get(self, ref: str) -> Any:
        return SimpleNamespace(state=SimpleNamespace(running=ref in self.running))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SimpleNamespace]:
    config = DaemonConfig(root=tmp_path / "root")
    store = ImageStore(config.images_root)
    engine = FakeEngine()
    services = SimpleNamespace(config=config, images=store, snapshotter=None, engine=engine)
    router = Router()
    api.register(router, cast(Services, services))
    a = archive.import_rootfs(store, io.BytesIO(_tar({"a": b"1"})), ["LABEL team=core"], "app:1")
    b = archive.import_rootfs(store, io.BytesIO(_tar({"b": b"2"})), [], None)
    yield SimpleNamespace(router=router, store=store, engine=engine, a=a, b=b, root=tmp_path)
    store.close()


def call(
    env: SimpleNamespace,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """Route and run one request as the server would; errors as their status."""
    from bulkhead.api.routes import parse_target

    version, path, query = parse_target(target)
    handler, params = env.router.match(method, path)
    req = Request(method, path, version, query, headers or {}, params=params)
    if env.router.streams_body(handler):
        req.stream = BodyStream.of(body)
    else:
        req.body = body

    async def run() -> tuple[int, bytes]:
        try:
            reply = await handler(req)
        except Exception as exc:
            return status_for(exc), str(exc).encode()
        if isinstance(reply, Response):
            return reply.status, reply.body
        assert isinstance(reply, StreamResponse)
        return reply.status, b"".join([c async for c in reply.chunks])

    return asyncio.run(run())


def test_list_and_filters(env: SimpleNamespace) -> None:
    status, body = call(env, "GET", "/images/json")
    assert status == 200
    assert {tuple(s["RepoTags"]) for s in json.loads(body)} == {("app:1",), ()}

    def ids(filters: dict[str, list[str]]) -> list[str]:
        q = json.dumps(filters)
        status, body = call(env, "GET", f"/images/json?filters={q}")
        assert status == 200, body
        return [s["Id"] for s in json.loads(body)]

    assert ids({"dangling": ["true"]}) == [env.b.id]
    assert ids({"dangling": ["false"]}) == [env.a.id]
    assert ids({"label": ["team=core"]}) == [env.a.id]
    assert ids({"label": ["team"]}) == [env.a.id]
    assert ids({"label": ["team=other"]}) == []
    assert ids({"reference": ["app"]}) == [env.a.id]
    assert ids({"reference": ["ap*:1"]}) == [env.a.id]
    assert ids({"reference": ["nope*"]}) == []
    assert ids({"until": ["2000-01-01T00:00:00Z"]}) == []
    assert call(env, "GET", '/images/json?filters={"colour":["red"]}') == (
        400,
        b"invalid filter 'colour'",
    )
    assert call(env, "GET", '/images/json?filters={"dangling":["maybe"]}')[0] == 400


def test_image_events_carry_dockers_actor_and_labels(env: SimpleNamespace) -> None:
    assert call(env, "POST", "/images/app:1/tag?repo=other&tag=2")[0] == 201
    assert call(env, "DELETE", "/images/other:2")[0] == 200  # app:1 remains: untag only
    assert call(env, "DELETE", "/images/app:1")[0] == 200  # the last name: untag, delete
    a = env.a.id
    got = [(e.action, e.actor_id, e.attributes) for e in env.engine.events.history()]
    assert got == [
        ("tag", a, {"team": "core", "name": "other:2"}),
        ("untag", a, {"team": "core", "name": a}),
        ("untag", a, {"team": "core", "name": a}),
        ("delete", a, {"name": a}),
    ]


def test_tag_errors(env: SimpleNamespace) -> None:
    assert call(env, "POST", "/images/app:1/tag?repo=other&tag=2")[0] == 201
    assert env.store.get("other:2").id == env.a.id
    assert call(env, "POST", "/images/app:1/tag?repo=third")[0] == 201
    assert env.store.get("third:latest").id == env.a.id
    assert call(env, "POST", "/images/app:1/tag")[0] == 400
    assert call(env, "POST", "/images/app:1/tag?repo=x&tag=bad!tag")[0] == 400
    assert call(env, "POST", "/images/app:1/tag?repo=UPPER")[0] == 400
    status, msg = call(env, "POST", "/images/nosuch/tag?repo=x")
    assert status == 404 and b"No such image: nosuch" in msg


def test_remove_refuses_images_in_use(env: SimpleNamespace) -> None:
    cid = "a" * 64
    env.store.register_use(env.a, cid)
    status, msg = call(env, "DELETE", "/images/app:1")
    assert status == 409 and cid.encode() in msg
    env.engine.running.add(cid)
    status, msg = call(env, "DELETE", "/images/app:1?force=1")
    assert status == 409 and b"cannot be forced" in msg and b"running container" in msg
    env.engine.running.clear()
    status, body = call(env, "DELETE", "/images/app:1?force=1&noprune=1")
    assert status == 200 and json.loads(body) == [{"Untagged": "app:1"}]
    assert env.store.get(env.a.id).tags == []  # kept for its container
    status, _ = call(env, "DELETE", f"/images/{env.a.id}?force=1")
    assert status == 409  # nothing left to untag; the container still needs it
    env.store.unregister_use(env.a, cid)
    status, body = call(env, "DELETE", f"/images/{env.a.id}")
    assert status == 200 and json.loads(body) == [{"Deleted": env.a.id}]
    assert call(env, "DELETE", "/images/app:1?force=maybe")[0] == 400


def test_import_load_save(env: SimpleNamespace) -> None:
    status, body = call(
        env,
        "POST",
        "/images/create?fromSrc=-&repo=imp&tag=v2&message=hello&changes=CMD%20%5B%22%2Fx%22%5D",
        _tar({"x": b"#!"}),
    )
    assert status == 200, body
    new_id = json.loads(body)["status"]
    image = env.store.get("imp:v2")
    assert image.id == new_id and image.config["config"]["Cmd"] == ["/x"]
    assert image.config["comment"] == "hello"
    status, body = call(env, "POST", "/images/create?fromSrc=-", b"not a tar" * 100)
    assert status == 400 and b"import failed" in body
    assert call(env, "POST", "/images/create?fromSrc=ftp://x/a.tar")[0] == 400
    status, body = call(env, "POST", "/images/create?fromSrc=http://127.0.0.1:1/a.tar")
    assert status == 400 and b"import from http://127.0.0.1:1/a.tar" in body
    assert call(env, "POST", "/images/create?fromSrc=-&changes=RUN%20x", b"")[0] == 400
    assert call(env, "POST", "/images/create")[0] == 400
    assert call(env, "POST", "/images/create?fromImage=Busybox")[0] == 400
    assert call(env, "POST", "/images/create?fromImage=busybox&platform=linux/*")[0] == 400
    # save -> load round trip (streams both ways)
    status, tar_bytes = call(env, "GET", "/images/get?names=imp:v2&names=app:1")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert sorted(t for e in manifest for t in e["RepoTags"]) == ["app:1", "imp:v2"]
    env.store.untag("imp:v2")
    status, body = call(env, "POST", "/images/load?quiet=1", tar_bytes)
    assert status == 200
    lines = [json.loads(x) for x in body.splitlines()]
    assert {"stream": "Loaded image: imp:v2\n"} in lines
    assert env.store.get("imp:v2").id == new_id
    status, body = call(env, "POST", "/images/load", b"garbage" * 100)
    assert status == 400 and b"invalid image archive" in body
    assert call(env, "GET", "/images/nosuch/get")[0] == 404
    assert call(env, "GET", "/images/get")[0] == 400
    assert not list((env.store.root / "tmp").iterdir())  # spooled uploads are gone


def test_inspect_history_prune_and_auth(env: SimpleNamespace) -> None:
    status, body = call(env, "GET", "/images/app:1/json")
    assert status == 200 and json.loads(body)["Id"] == env.a.id
    status, body = call(env, "GET", "/images/app:1/history")
    assert status == 200 and json.loads(body)[0]["Id"] == env.a.id
    status, body = call(env, "POST", '/images/prune?filters={"label":["team=core"]}')
    assert status == 200 and json.loads(body)["ImagesDeleted"] is None  # app:1 is not dangling
    status, body = call(env, "POST", "/images/prune")
    assert status == 200
    assert json.loads(body)["ImagesDeleted"] == [{"Deleted": env.b.id}]
    status, body = call(env, "POST", '/images/prune?filters={"dangling":["false"]}')
    assert {"Untagged": "app:1"} in json.loads(body)["ImagesDeleted"]
    a, b = env.a.id, env.b.id
    got = [(e.action, e.actor_id) for e in env.engine.events.history() if e.actor_id]
    assert got == [("delete", b), ("untag", a), ("delete", a)]  # as docker rmi would log them
    assert call(env, "POST", '/images/prune?filters={"what":["x"]}')[0] == 400
    assert call(env, "POST", "/auth", b'{"serveraddress":"127.0.0.1:1"}')[0] == 400
    assert call(env, "POST", "/auth", b"[]")[0] == 400
    assert call(env, "POST", "/images/x/push", headers={"x-registry-auth": "@@"})[0] == 400
    status, msg = call(env, "POST", "/images/127.0.0.1:1/none/push?tag=1")
    assert status == 404 and b"An image does not exist locally with the tag" in msg


def test_a_save_whose_client_goes_away_stops(
    env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writing the tar gives up when the client disconnects: no thread stays blocked."""
    import threading

    from bulkhead.api.server import APIServer

    big = io.BytesIO(_tar({"zeros": bytes(24 << 20)}))
    archive.import_rootfs(env.store, big, [], "big:1")
    finished = threading.Event()
    outcome: list[BaseException | None] = []
    real_save = archive.save

    def save(*args: Any, **kwargs: Any) -> None:
        try:
            real_save(*args, **kwargs)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            finished.set()

    monkeypatch.setattr(archive, "save", save)  # the module api.images calls through

    async def main() -> None:
        sock = str(env.root / "api.sock")
        server = APIServer(env.router)
        await server.start_unix(sock)
        try:
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(b"GET /images/big:1/get HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"application/x-tar" in head
            await reader.readexactly(100_000)
            writer.close()  # gone, with megabytes still to come
            for _ in range(200):
                if finished.is_set():
                    break
                await asyncio.sleep(0.05)
        finally:
            await server.close()

    asyncio.run(main())
    assert finished.wait(10), "the save worker is still blocked"
    assert outcome and isinstance(outcome[0], BrokenPipeError)


def test_filter_times() -> None:
    assert api._timestamp("1700000000.5") == 1700000000.5
    assert api._timestamp("2023-11-14T22:13:20Z") == 1700000000
    assert api._timestamp("24h", now=100000) == 100000 - 86400
    assert api._timestamp("1h30m", now=10000) == 10000 - 5400
    assert api._timestamp("1.5s", now=10) == 8.5
    with pytest.raises(BadRequest, match="invalid filter time"):
        api._timestamp("yesterday")


def test_registry_info_for_docker_info() -> None:
    info = api.registry_info(["10.1.0.0/16", "myreg:5000"], ["http://127.0.0.1:5001"])
    assert info["InsecureRegistryCIDRs"] == ["::1/128", "127.0.0.0/8", "10.1.0.0/16"]
    assert info["IndexConfigs"]["myreg:5000"]["Secure"] is False
    assert info["IndexConfigs"]["docker.io"]["Mirrors"] == ["http://127.0.0.1:5001/"]
    assert info["Mirrors"] == ["http://127.0.0.1:5001/"]
    assert api.registry_info([], [])["InsecureRegistryCIDRs"] == ["::1/128", "127.0.0.0/8"]
