"""The image endpoints, judged by the real ``docker`` CLI.

Pull and push go to a real docker-registry on 127.0.0.1 (registry_fixtures);
nothing leaves the machine. Run with ``BULKHEAD_IMAGES_STANDIN=1`` to use
the images-only stand-in server instead of the full daemon (images_fixtures).
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.integration import images_fixtures
from tests.integration.engine_fixtures import Daemon
from tests.integration.registry_fixtures import PASSWORD, USER, CuttingProxy, Registry

from bulkhead.images.store import ImageStore

images_daemon = images_fixtures.images_daemon
images_daemon_factory = images_fixtures.images_daemon_factory


def ok(r: object) -> str:
    """stdout of a docker run that must have succeeded."""

    assert isinstance(r, subprocess.CompletedProcess)
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return str(r.stdout)


def image_id(d: Daemon, ref: str) -> str:
    return ok(d.docker("image", "inspect", "--format", "{{.Id}}", ref)).strip()


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_push_then_pull_into_an_empty_store(
    images_daemon_factory: Callable[[], Daemon], registry: Registry
) -> None:
    a, b = images_daemon_factory(), images_daemon_factory()
    ref = registry.ref("team/bb:1.0")
    ok(a.docker("tag", "busybox", ref))
    out = ok(a.docker("push", ref))
    assert f"The push refers to repository [{registry.host}/team/bb]" in out
    assert "Pushed" in out
    assert "1.0: digest: sha256:" in out
    pushed_digest = out.split("digest: ", 1)[1].split()[0]
    digests = ok(a.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref))
    assert f"{registry.host}/team/bb@{pushed_digest}" in json.loads(digests)
    # Pushing again: the registry has every layer.
    assert "Layer already exists" in ok(a.docker("push", ref))

    # b has busybox's blobs too: remove it so that the pull must download.
    ok(b.docker("rmi", "busybox"))
    assert ok(b.docker("images", "-q")).strip() == ""
    out = ok(b.docker("pull", ref))
    assert "1.0: Pulling from team/bb" in out
    assert "Extracting" in out and "Pull complete" in out
    assert f"Digest: {pushed_digest}" in out
    assert f"Status: Downloaded newer image for {ref}" in out
    assert image_id(b, ref) == image_id(a, "busybox")
    listed = ok(b.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"))
    assert f"{registry.host}/team/bb:1.0 " in listed
    # Again: nothing to download.
    out = ok(b.docker("pull", ref))
    assert "Already exists" in out and f"Image is up to date for {ref}" in out
    # By digest.
    out = ok(b.docker("pull", f"{registry.host}/team/bb@{pushed_digest}"))
    assert f"Digest: {pushed_digest}" in out

    # Missing tag and missing repository: Docker's error, exit 1, nothing in the stream.
    r = b.docker("pull", registry.ref("team/bb:nope"))
    assert r.returncode == 1
    assert "Error response from daemon: manifest for" in r.stderr and "not found" in r.stderr
    r = b.docker("pull", registry.ref("nobody/here"))
    assert r.returncode == 1 and "not found" in r.stderr
    # An image that is not there cannot be pushed.
    r = a.docker("push", registry.ref("team/absent:1"))
    assert r.returncode == 1
    assert "An image does not exist locally with the tag" in r.stderr


def test_push_all_tags_and_pull_all_tags(
    images_daemon_factory: Callable[[], Daemon], registry: Registry
) -> None:
    a, b = images_daemon_factory(), images_daemon_factory()
    for tag in ("a", "b"):
        ok(a.docker("tag", "busybox", registry.ref(f"multi:{tag}")))
    out = ok(a.docker("push", "--all-tags", registry.ref("multi")))
    assert "a: digest: sha256:" in out and "b: digest: sha256:" in out
    out = ok(b.docker("pull", "--all-tags", registry.ref("multi")))
    tags = ok(b.docker("images", "--format", "{{.Tag}}", registry.ref("multi")))
    assert sorted(tags.split()) == ["a", "b"]


def test_inspect_history_tag_rmi(images_daemon: Daemon) -> None:
    d = images_daemon
    doc = json.loads(ok(d.docker("image", "inspect", "busybox")))[0]
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["Id"].startswith("sha256:") and doc["Os"] == "linux"
    assert doc["Config"]["Cmd"] == ["sh"]
    history = ok(d.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "busybox"))
    assert 'CMD ["sh"]' in history

    ok(d.docker("tag", "busybox", "mine/app:v1"))
    assert image_id(d, "mine/app:v1") == image_id(d, "busybox")
    r = d.docker("tag", "busybox", "Bad:Name")
    assert r.returncode != 0 and "invalid reference format" in r.stderr
    r = d.docker("tag", "nosuch", "x:1")
    assert r.returncode == 1 and "No such image: nosuch" in r.stderr
    # rmi of one of two names only untags; by id with two names needs force.
    short = image_id(d, "busybox")[7:19]
    r = d.docker("rmi", short)
    assert r.returncode == 1 and "referenced in multiple repositories" in r.stderr
    assert ok(d.docker("rmi", "mine/app:v1")).strip() == "Untagged: mine/app:v1"
    r = d.docker("rmi", "nosuch")
    assert r.returncode == 1 and "No such image" in r.stderr
    r = d.docker("image", "inspect", "nosuch")
    assert r.returncode == 1 and "No such image" in r.stderr


def test_rmi_refuses_an_image_in_use(images_daemon: Daemon) -> None:
    d = images_daemon
    user = "c" * 64
    store = ImageStore(d.root / "images")
    try:
        # What the engine does when it creates a container from the image.
        store.register_use("busybox", user)
        r = d.docker("rmi", "busybox")
        assert r.returncode == 1
        assert "conflict" in r.stderr and user in r.stderr
        assert image_id(d, "busybox")
        # Forced, used by a container that is not running: the name goes, the image stays.
        out = ok(d.docker("rmi", "-f", "busybox"))
        assert "Untagged: busybox:latest" in out and "Deleted" not in out
        assert store.users(store.list()[0]) == [user]
        r = d.docker("image", "prune", "-a", "-f")
        assert r.returncode == 0
        assert len(store.list()) == 1  # still in use: prune leaves it
        store.unregister_use(store.list()[0], user)
    finally:
        store.close()
    out = ok(d.docker("image", "prune", "-f"))
    assert "deleted: sha256:" in out
    assert ok(d.docker("images", "-aq")).strip() == ""


def test_save_and_load_round_trip(images_daemon: Daemon, tmp_path: Path) -> None:
    d = images_daemon
    before = image_id(d, "busybox")
    ok(d.docker("tag", "busybox", "other/name:2"))
    archive = tmp_path / "images.tar"
    ok(d.docker("save", "-o", str(archive), "busybox", "other/name:2"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert "manifest.json" in names and "index.json" in names
    assert sorted(manifest[0]["RepoTags"]) == ["busybox:latest", "other/name:2"]
    ok(d.docker("rmi", "-f", "busybox", "other/name:2"))
    assert ok(d.docker("images", "-q")).strip() == ""
    out = ok(d.docker("load", "-i", str(archive)))
    assert "Loaded image: busybox:latest" in out and "Loaded image: other/name:2" in out
    assert image_id(d, "busybox") == before == image_id(d, "other/name:2")
    # Through a pipe: the CLI sends the body chunked; the daemon streams it.
    data = archive.read_bytes()
    ok(d.docker("rmi", "other/name:2"))

    r = subprocess.run(
        ["docker", "load"], input=data, env=d.env(), capture_output=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    assert b"Loaded image: other/name:2" in r.stdout
    # Saving to stdout streams the tar.
    r = subprocess.run(
        ["docker", "save", "busybox"], env=d.env(), capture_output=True, timeout=60, check=False
    )
    assert r.returncode == 0 and r.stdout[:1] != b""
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert "manifest.json" in tar.getnames()
    # Not an archive: a clear 400, nothing loaded.
    r = subprocess.run(
        ["docker", "load"],
        input=b"not a tar at all" * 100,
        env=d.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and b"invalid image archive" in r.stderr
    r2 = d.docker("save", "-o", str(tmp_path / "x.tar"), "nosuch")
    assert r2.returncode == 1 and "No such image" in r2.stderr


def test_import_with_changes_and_prune(images_daemon: Daemon, tmp_path: Path) -> None:
    d = images_daemon
    tar_path = tmp_path / "rootfs.tar"
    tar_path.write_bytes(rootfs_tar({"bin/tool": b"#!/bin/sh\necho hi\n", "etc/x": b"x"}))
    out = ok(
        d.docker(
            "import",
            "--change",
            'CMD ["/bin/tool"]',
            "--change",
            "LABEL team=core",
            "--change",
            "ENV A=1",
            "-m",
            "from a tarball",
            str(tar_path),
            "imported:v1",
        )
    )
    new_id = out.strip()
    assert new_id.startswith("sha256:")
    doc = json.loads(ok(d.docker("image", "inspect", "imported:v1")))[0]
    assert doc["Id"] == new_id
    assert doc["Config"]["Cmd"] == ["/bin/tool"]
    assert doc["Config"]["Labels"] == {"team": "core"}
    assert "A=1" in doc["Config"]["Env"]
    assert doc["Comment"] == "from a tarball"
    # From stdin, without a name: a dangling image.

    r = subprocess.run(
        ["docker", "import", "-"],
        input=tar_path.read_bytes(),
        env=d.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    dangling = r.stdout.decode().strip()
    r3 = d.docker("import", "--change", "BOGUS x", str(tar_path))
    assert r3.returncode == 1 and "invalid changes" in r3.stderr

    # Filters.
    assert ok(d.docker("images", "-q", "--no-trunc", "--filter", "dangling=true")).split() == [
        dangling
    ]
    assert ok(d.docker("images", "--format", "{{.Repository}}", "--filter", "label=team=core")) == (
        "imported\n"
    )
    assert ok(d.docker("images", "--format", "{{.Repository}}", "--filter", "reference=imp*")) == (
        "imported\n"
    )
    assert "busybox" in ok(
        d.docker("images", "--format", "{{.Repository}}", "--filter", "before=imported:v1")
    )
    r4 = d.docker("images", "--filter", "colour=red")
    assert r4.returncode == 1 and "invalid filter" in r4.stderr

    # prune: the dangling one only; -a: every unused image.
    out = ok(d.docker("image", "prune", "-f"))
    assert f"deleted: {dangling}" in out
    repos = ok(d.docker("images", "--format", "{{.Repository}}")).split()
    assert sorted(repos) == ["busybox", "imported"]
    out = ok(d.docker("image", "prune", "-a", "-f", "--filter", "label=team=core"))
    assert "untagged: imported:v1" in out
    assert ok(d.docker("images", "--format", "{{.Repository}}")).split() == ["busybox"]


def test_login_push_pull_with_htpasswd(
    images_daemon_factory: Callable[[], Daemon], registry_factory: Callable[..., Registry]
) -> None:
    reg = registry_factory("htpasswd")
    d = images_daemon_factory()
    ref = reg.ref("private/bb:1")
    ok(d.docker("tag", "busybox", ref))
    # Without credentials: refused.
    r = d.docker("push", ref, input="")
    assert r.returncode == 1
    assert "username and password" in (r.stdout + r.stderr) or "401" in (r.stdout + r.stderr)
    # A wrong password: 401 from /auth, nothing stored.
    r = d.docker("login", "-u", USER, "--password-stdin", reg.host, input="wrong\n")
    assert r.returncode == 1 and "authentication failed" in r.stderr
    config = Path(d.env()["DOCKER_CONFIG"]) / "config.json"
    assert not config.exists() or reg.host not in config.read_text()
    # The right one: Login Succeeded; the CLI keeps it and sends it with push and pull.
    r = d.docker("login", "-u", USER, "--password-stdin", reg.host, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "Login Succeeded" in r.stdout
    assert reg.host in config.read_text()
    out = ok(d.docker("push", ref))
    assert "Pushed" in out
    ok(d.docker("rmi", ref))
    assert "Status: Image is up to date" not in ok(d.docker("pull", ref))
    ok(d.docker("logout", reg.host))
    ok(d.docker("rmi", ref))
    # Refused: the CLI would offer to log in; with stdin closed it gives up.
    r = d.docker("pull", ref, input="")
    assert r.returncode == 1


@pytest.mark.parametrize("auth", ["token"])
def test_login_with_a_token_server(
    images_daemon: Daemon, registry_factory: Callable[..., Registry], auth: str
) -> None:
    reg = registry_factory(auth)
    d = images_daemon
    r = d.docker("login", "-u", USER, "--password-stdin", reg.host, input="nope\n")
    assert r.returncode == 1
    r = d.docker("login", "-u", USER, "--password-stdin", reg.host, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    ref = reg.ref("tok/bb:1")
    ok(d.docker("tag", "busybox", ref))
    assert "digest: sha256:" in ok(d.docker("push", ref))
    ok(d.docker("rmi", ref, "busybox"))
    assert f"Downloaded newer image for {ref}" in ok(d.docker("pull", ref))
    # The token server saw the credentials of the login, with the scopes asked for.
    assert reg.token_server is not None
    scopes = [q.get("scope") for q in (r["query"] for r in reg.token_server.requests)]
    assert any(s and "repository:tok/bb:pull" in s[0] for s in scopes)


def test_store_is_consistent_after_failed_pull(images_daemon: Daemon, registry: Registry) -> None:
    """A pull that fails leaves no image, no name, no partial record."""
    d = images_daemon
    r = d.docker("pull", registry.ref("missing/repo:1"))
    assert r.returncode == 1
    db = sqlite3.connect(d.root / "images" / "images.db")
    try:
        names = [row[0] for row in db.execute("SELECT name FROM tags")]
    finally:
        db.close()
    assert names == ["docker.io/library/busybox:latest"]


@pytest.mark.skipif(images_fixtures.STANDIN, reason="needs the container engine")
def test_rmi_of_an_image_a_container_uses(images_daemon: Daemon) -> None:
    d = images_daemon
    cid = ok(d.docker("create", "--name", "user1", "busybox", "true")).strip()
    r = d.docker("rmi", "busybox")
    assert r.returncode == 1
    assert "conflict" in r.stderr and cid[:12] in r.stderr
    ok(d.docker("tag", "busybox", "second:name"))
    # One of several names may go; the image stays for the container.
    assert ok(d.docker("rmi", "second:name")).strip() == "Untagged: second:name"
    ok(d.docker("rm", "user1"))
    # A running container: not even force removes its image.
    running = ok(d.docker("run", "-d", "--network=none", "busybox", "sleep", "60")).strip()
    try:
        r = d.docker("rmi", "-f", "busybox")
        assert r.returncode == 1
        assert "cannot be forced" in r.stderr and running[:12] in r.stderr
    finally:
        ok(d.docker("rm", "-f", running))
    out = ok(d.docker("rmi", "busybox"))
    assert "Untagged: busybox:latest" in out and "Deleted: sha256:" in out


def _fresh_with_pushed(
    images_daemon_factory: Callable[[], Daemon], registry: Registry, repo: str
) -> tuple[Daemon, str]:
    """A daemon with busybox pushed to ``registry`` as ``repo:1``, then removed locally."""
    d = images_daemon_factory()
    ref = registry.ref(f"{repo}:1")
    ok(d.docker("tag", "busybox", ref))
    ok(d.docker("push", ref))
    ok(d.docker("rmi", ref, "busybox"))
    assert ok(d.docker("images", "-aq")).strip() == ""
    return d, ref


def test_a_pull_cut_off_reports_in_the_stream_and_resumes(
    images_daemon_factory: Callable[[], Daemon],
    registry: Registry,
    cutting_proxy: Callable[..., CuttingProxy],
) -> None:
    d, ref = _fresh_with_pushed(images_daemon_factory, registry, "cut/bb")
    proxy = cutting_proxy(registry.host, cut_after=20000, cuts=1000)
    via_proxy = f"{proxy.host}/cut/bb:1"
    r = d.docker("pull", via_proxy)
    # The failure came after "Pulling from": an errorDetail in the stream, exit 1.
    assert r.returncode == 1
    assert "Pulling from cut/bb" in r.stdout
    assert "attempts" in r.stderr
    assert ok(d.docker("images", "-aq")).strip() == ""
    # The bytes received are kept: the next pull resumes them.
    out = ok(d.docker("pull", ref))
    assert "Downloaded newer image" in out


def test_concurrent_pulls_of_one_image(
    images_daemon_factory: Callable[[], Daemon], registry: Registry
) -> None:
    d, ref = _fresh_with_pushed(images_daemon_factory, registry, "conc/bb")
    procs = [
        subprocess.Popen(
            ["docker", "pull", ref],
            env=d.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert f"for {ref}" in out
    assert len(ok(d.docker("images", "-q")).split()) == 1


@pytest.mark.parametrize("kill", [True, False], ids=["kill-9", "sigterm"])
def test_daemon_stopped_during_a_pull_leaves_no_image(
    images_daemon_factory: Callable[[], Daemon],
    registry: Registry,
    cutting_proxy: Callable[..., CuttingProxy],
    kill: bool,
) -> None:
    """Killed, or told to stop (it does not wait for the stalled pull), mid-layer: no image."""
    d, ref = _fresh_with_pushed(images_daemon_factory, registry, "kill/bb")
    proxy = cutting_proxy(registry.host, cut_after=20000, cuts=1, stall=True)
    puller = subprocess.Popen(
        ["docker", "pull", f"{proxy.host}/kill/bb:1"],
        env=d.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while proxy.cuts_done == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.cuts_done == 1, "the pull never reached the layer"
        started = time.monotonic()
        d.stop(kill=kill)
        assert time.monotonic() - started < 10
        d.start()
        puller.communicate(timeout=30)
        assert puller.returncode != 0
    finally:
        if puller.poll() is None:
            puller.kill()
            puller.communicate()
    assert ok(d.docker("images", "-aq")).strip() == ""
    assert "Downloaded newer image" in ok(d.docker("pull", ref))


def test_uploads_beyond_the_buffered_body_cap(images_daemon: Daemon, tmp_path: Path) -> None:
    """Import and load stream their bodies: 70 MiB passes where buffered bodies stop at 64."""
    d = images_daemon
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        info = tarfile.TarInfo("blob.bin")
        info.size = 70 << 20
        with open("/dev/zero", "rb") as zero:
            tar.addfile(info, zero)
    ok(d.docker("import", str(big), "big:1"))
    size = ok(d.docker("image", "inspect", "--format", "{{.Size}}", "big:1"))
    assert int(size) > 70 << 20
    saved = tmp_path / "saved.tar"
    ok(d.docker("save", "-o", str(saved), "big:1"))
    ok(d.docker("rmi", "big:1"))
    assert "Loaded image: big:1" in ok(d.docker("load", "-i", str(saved)))


@pytest.mark.skipif(images_fixtures.STANDIN, reason="needs the container engine")
def test_run_an_image_pulled_from_a_registry(
    images_daemon_factory: Callable[[], Daemon], registry: Registry
) -> None:
    d, ref = _fresh_with_pushed(images_daemon_factory, registry, "run/bb")
    r = d.docker("run", "--rm", "--network=none", ref, "echo", "pulled and running")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "pulled and running\n"
    # The CLI pulled it (create said "No such image"), through this API.
    assert "Downloaded newer image" in r.stderr or "Pull complete" in r.stderr


def test_import_from_a_url(images_daemon: Daemon, tmp_path: Path) -> None:
    """``docker import http://...``: the daemon fetches the tar (here from 127.0.0.1)."""
    import functools
    import http.server
    import threading

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "fs.tar").write_bytes(rootfs_tar({"from-url": b"yes"}))
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www")
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        out = ok(images_daemon.docker("import", f"http://127.0.0.1:{port}/fs.tar", "fromurl:1"))
        assert out.strip().splitlines()[-1].startswith("sha256:")
        assert image_id(images_daemon, "fromurl:1") == out.strip().splitlines()[-1]
        r = images_daemon.docker("import", f"http://127.0.0.1:{port}/missing.tar")
        assert r.returncode == 1 and "HTTP 404" in r.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_an_unreachable_registry_fails_at_once(images_daemon: Daemon) -> None:
    """As Docker: a refused connection for the manifest is an error now, not after retries."""
    from tests.integration.registry_fixtures import free_port

    started = time.monotonic()
    r = images_daemon.docker("pull", f"127.0.0.1:{free_port()}/nothing/here:1")
    assert r.returncode == 1
    assert "Connection refused" in r.stderr
    assert time.monotonic() - started < 1.5
