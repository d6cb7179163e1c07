"""The image endpoints through docker-py (its own parsing of progress, load and save streams)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from typing import Any

import pytest
from tests.integration import images_fixtures
from tests.integration.engine_fixtures import Daemon
from tests.integration.registry_fixtures import PASSWORD, USER, Registry

docker = pytest.importorskip("docker")

images_daemon = images_fixtures.images_daemon
images_daemon_factory = images_fixtures.images_daemon_factory


def test_list_get_tag_history_remove(images_daemon: Daemon) -> None:
    client = images_daemon.client()
    images = client.images.list()
    assert [i.tags for i in images] == [["busybox:latest"]]
    image = client.images.get("busybox")
    assert image.id == images[0].id and image.short_id.startswith("sha256:")
    assert image.attrs["Config"]["Cmd"] == ["sh"]
    assert image.tag("py/app", "v1") is True
    assert sorted(client.images.get("py/app:v1").tags) == ["busybox:latest", "py/app:v1"]
    # docker-py re-inspects what the reference filter found; the raw list is filtered.
    assert [i.id for i in client.images.list(name="py/app")] == [image.id]
    assert [s["RepoTags"] for s in client.api.images(name="py/app")] == [["py/app:v1"]]
    assert client.images.list(filters={"dangling": True}) == []
    history = image.history()
    assert history[0]["Id"] == image.id and 'CMD ["sh"]' in history[0]["CreatedBy"]
    client.images.remove("py/app:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("py/app:v1")
    image.tag("py/app", "v2")
    with pytest.raises(docker.errors.APIError) as info:
        client.images.remove(image.id[7:19])  # by id, two names: must be forced
    assert info.value.status_code == 409
    client.images.remove(image.id[7:19], force=True)
    assert client.images.list(all=True) == []


def test_save_load_and_import(images_daemon: Daemon) -> None:
    client = images_daemon.client()
    image = client.images.get("busybox")
    data = b"".join(image.save(named=True))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "manifest.json" in tar.getnames()
    client.images.remove("busybox", force=True)
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [image.id]
    assert client.images.get("busybox").tags == ["busybox:latest"]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    out = client.api.import_image_from_data(
        buf.getvalue(), repository="py/imported", tag="1", changes=["ENV X=1"]
    )
    assert "sha256:" in str(out)
    imported = client.images.get("py/imported:1")
    assert "X=1" in imported.attrs["Config"]["Env"]
    result = client.images.prune(filters={"dangling": False})
    assert {d.get("Untagged") for d in result["ImagesDeleted"]} >= {"py/imported:1"}


def test_pull_push_with_auth(
    images_daemon_factory: Callable[[], Daemon], registry_factory: Callable[..., Registry]
) -> None:
    reg = registry_factory("htpasswd")
    a, b = images_daemon_factory(), images_daemon_factory()
    ca, cb = a.client(), b.client()
    auth = {"username": USER, "password": PASSWORD}
    with pytest.raises(docker.errors.APIError) as info:
        ca.login(username=USER, password="wrong", registry=reg.host, reauth=True)
    assert info.value.status_code == 401
    assert ca.login(username=USER, password=PASSWORD, registry=reg.host, reauth=True)["Status"] == (
        "Login Succeeded"
    )
    repo = reg.ref("py/bb")
    ca.images.get("busybox").tag(repo, "7")
    events: list[dict[str, Any]] = list(
        ca.images.push(repo, "7", auth_config=auth, stream=True, decode=True)
    )
    assert not [e for e in events if "error" in e], events
    aux = [e["aux"] for e in events if "aux" in e]
    assert aux and aux[0]["Tag"] == "7" and aux[0]["Digest"].startswith("sha256:")
    cb.images.remove("busybox")
    progress = list(cb.api.pull(repo, "7", auth_config=auth, stream=True, decode=True))
    statuses = [e.get("status", "") for e in progress]
    assert any(s.startswith("Pulling from py/bb") for s in statuses)
    assert any(s == "Downloading" for s in statuses) or "Download complete" in statuses
    assert statuses[-1] == f"Status: Downloaded newer image for {repo}:7"
    pulled = cb.images.pull(repo, tag="7", auth_config=auth)
    assert pulled.id == ca.images.get(f"{repo}:7").id
    # Without credentials the pull is refused with Docker's 404 (never a 401 mid-pull).
    cb.images.remove(f"{repo}:7")
    with pytest.raises(docker.errors.APIError) as info:
        cb.images.pull(repo, tag="7")
    assert info.value.status_code == 404 and "pull access denied" in str(info.value)
