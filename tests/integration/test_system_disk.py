"""``system df``, ``system prune`` and image garbage collection, on a real daemon.

Through the stock docker CLI and bulkhead's own; the garbage collection test
measures the bytes on disk of the image store's blobs and the snapshotter's
layers, before and after, and checks that shared and used layers stay.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from tests.integration.engine_fixtures import Daemon
from tests.integration.registry_fixtures import Registry


def disk_bytes(root: Path) -> int:
    """Bytes allocated under the blob store and the snapshots (``du``'s count, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in (root / "images" / "content", root / "snapshots"):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if name.startswith("metadata.db"):
                    continue  # the snapshotter's SQLite file (and its WAL) only grows
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def snapshot_dirs(root: Path) -> set[str]:
    return {p.name for d in (root / "snapshots").iterdir() for p in (d / "snapshots").iterdir()}


def settled(root: Path, count: int) -> set[str]:
    """The snapshot directories once there are ``count`` (a removed container's go after its
    removal is answered); fails after a generous deadline."""
    deadline = time.monotonic() + 30
    while len(dirs := snapshot_dirs(root)) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dirs) == count, dirs
    return dirs


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, encoded = digest.partition(":")
    return root / "images" / "content" / "blobs" / algorithm / encoded


def ok(r: object) -> str:
    assert getattr(r, "returncode", 1) == 0, r
    return str(getattr(r, "stdout", ""))


def reclaimed(text: str) -> float:
    m = re.search(r"Total reclaimed space: ([\d.]+)(B|kB|MB|GB)", text)
    assert m, text
    return float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]


def test_rmi_and_prune_free_the_disk_and_keep_shared_and_used_layers(
    daemon: Daemon, tmp_path: Path
) -> None:
    root = daemon.root
    tar = tmp_path / "busybox.tar"
    ok(daemon.docker("save", "-o", str(tar), "busybox"))
    ok(daemon.docker("rmi", "busybox"))
    empty = disk_bytes(root)
    assert not list((root / "images" / "content" / "blobs" / "sha256").iterdir())

    ok(daemon.docker("load", "-i", str(tar)))
    ok(daemon.docker("run", "--rm", "busybox", "true"))  # unpacks busybox's layer
    base_layers = daemon.client().images.get("busybox").attrs["RootFS"]["Layers"]
    busybox_layers = settled(root, len(base_layers))
    with_busybox = disk_bytes(root)

    # an image on top of busybox: its own 3 MB layer, busybox's shared
    ok(
        daemon.docker(
            "run", "--name", "maker", "busybox", "sh", "-c", "head -c 3000000 /dev/urandom > /big"
        )
    )
    ok(daemon.docker("commit", "maker", "derived:1"))
    ok(daemon.docker("rm", "maker"))
    ok(daemon.docker("run", "--rm", "derived:1", "true"))  # unpacks its top layer
    settled(root, len(base_layers) + 1)
    assert disk_bytes(root) > with_busybox + 2 * 3_000_000  # the layer blob and its unpacked copy

    ok(daemon.docker("rmi", "derived:1"))
    after = disk_bytes(root)
    assert abs(after - with_busybox) < 64 * 1024, (after, with_busybox)
    assert snapshot_dirs(root) == busybox_layers  # the shared base is kept
    ok(daemon.docker("run", "--rm", "busybox", "true"))

    # an image used by a container is kept, by image prune -a and by a forced rmi
    ok(daemon.docker("run", "-d", "--name", "user", "busybox", "sleep", "300"))
    out = ok(daemon.docker("image", "prune", "-a", "-f"))
    assert "busybox" not in out and reclaimed(out) == 0
    assert daemon.docker("rmi", "-f", "busybox").returncode != 0  # in use by a running one
    assert snapshot_dirs(root) >= busybox_layers
    ok(daemon.docker("rm", "-f", "user"))
    assert settled(root, len(base_layers)) == busybox_layers  # the container's own layer went

    before = disk_bytes(root)
    out = ok(daemon.docker("image", "prune", "-a", "-f"))
    assert "deleted: sha256:" in out
    freed = before - disk_bytes(root)
    # SpaceReclaimed is what left the disk (blob sizes vs blocks: a few kB apart)
    assert abs(reclaimed(out) - freed) < 64 * 1024 + 0.01 * freed, (out, freed)
    assert abs(disk_bytes(root) - empty) < 64 * 1024, (disk_bytes(root), empty)
    assert snapshot_dirs(root) == set()
    assert not list((root / "images" / "content" / "blobs" / "sha256").iterdir())


def test_rmi_keeps_layers_another_image_shares(daemon: Daemon) -> None:
    root = daemon.root
    layer = daemon.client().images.get("busybox").attrs["RootFS"]["Layers"][0]
    manifest_layers = json.loads(
        ok(daemon.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", "busybox"))
    )
    assert manifest_layers == [layer]
    ok(daemon.docker("tag", "busybox", "other:1"))
    ok(daemon.docker("run", "--name", "maker", "busybox", "touch", "/x"))
    ok(daemon.docker("commit", "maker", "derived:1"))
    ok(daemon.docker("rm", "maker"))
    blobs = {p.name for p in (root / "images" / "content" / "blobs" / "sha256").iterdir()}
    ok(daemon.docker("rmi", "busybox", "other:1"))  # derived still needs busybox's layer blob
    left = {p.name for p in (root / "images" / "content" / "blobs" / "sha256").iterdir()}
    assert left < blobs
    derived = daemon.client().images.get("derived:1").attrs
    assert len(derived["RootFS"]["Layers"]) == 2
    ok(daemon.docker("run", "--rm", "derived:1", "ls", "/x"))  # its base layer still unpacks


def test_system_df_and_prune_with_docker_and_bulkhead_clis(daemon: Daemon) -> None:
    ok(
        daemon.docker(
            "run", "--name", "done", "busybox", "sh", "-c", "head -c 200000 /dev/zero > /f"
        )
    )
    ok(daemon.docker("run", "-d", "--name", "up", "-v", "/data", "busybox", "sleep", "300"))
    ok(daemon.docker("volume", "create", "named"))
    table = ok(daemon.docker("system", "df"))
    lines = table.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert lines[1].split()[:3] == ["Images", "1", "1"]
    assert lines[2].split()[:3] == ["Containers", "2", "1"]
    assert lines[3].split()[:4] == ["Local", "Volumes", "2", "1"]
    assert lines[4].split()[:4] == ["Build", "Cache", "0", "0"]
    assert ok(daemon.bulkhead("system", "df")) == table
    fmt = "{{.Type}}={{.TotalCount}}/{{.Active}}"
    assert ok(daemon.docker("system", "df", "--format", fmt)) == ok(
        daemon.bulkhead("system", "df", "--format", fmt)
    )
    verbose = ok(daemon.docker("system", "df", "-v"))
    ours = ok(daemon.bulkhead("system", "df", "-v"))
    for text in (verbose, ours):
        assert "Images space usage:" in text and "Local Volumes space usage:" in text
        assert re.search(r"^busybox +latest +\w{12} ", text, re.M), text
        assert re.search(r"^named +0 +0B", text, re.M), text
        assert re.search(r"^\w{12} +busybox +\"sleep 300\" +1 ", text, re.M), text

    since = str(time.time() - 1)
    out = ok(daemon.docker("system", "prune", "-f"))
    assert out.startswith("Deleted Containers:\n")
    assert "Total reclaimed space: 2" in out  # the stopped container's 200 kB layer
    events = ok(
        daemon.docker(
            "events",
            "--since",
            since,
            "--until",
            str(time.time() + 1),
            "--filter",
            "event=prune",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.reclaimed}}",
        )
    ).splitlines()
    assert [e.split()[:2] for e in events] == [
        ["container", "prune"],
        ["network", "prune"],
        ["image", "prune"],
        ["builder", "prune"],
    ], events
    assert int(events[0].split()[2]) >= 200_000
    names = ok(daemon.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert names == ["up"]
    ok(daemon.docker("rm", "-f", "up"))
    since = str(time.time() - 1)
    out = ok(daemon.bulkhead("system", "prune", "-a", "-f", "--volumes"))
    assert "Deleted Volumes:\n" in out and "named" not in out  # anonymous volumes only
    assert "Deleted Images:\nuntagged: busybox:latest\ndeleted: sha256:" in out
    image_id = out.split("deleted: ")[1].split()[0]
    events = ok(
        daemon.docker(
            "events",
            "--since",
            since,
            "--until",
            str(time.time() + 1),
            "--filter",
            "type=image",
            "--filter",
            "type=volume",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}}",
        )
    ).splitlines()
    assert [e.split()[:2] for e in events][-4:] == [
        ["volume", "prune"],
        ["image", "untag"],
        ["image", "delete"],
        ["image", "prune"],
    ], events
    assert events[-2].split()[2] == image_id
    assert ok(daemon.docker("images", "-q")) == ""
    assert ok(daemon.docker("volume", "ls", "-q")).split() == ["named"]
    out = ok(daemon.docker("system", "prune", "-a", "-f", "--volumes"))
    assert out == "Total reclaimed space: 0B\n"
    for cli in (daemon.docker, daemon.bulkhead):
        r = cli("system", "prune", "-f", "--volumes", "--filter", "until=1h")
        assert r.returncode == 1
        assert r.stderr == 'ERROR: The "until" filter is not supported with "--volumes"\n'
    assert ok(daemon.docker("network", "prune", "-f")) == ""
    assert ok(daemon.docker("builder", "prune", "-a", "-f")) == "Total reclaimed space: 0B\n"
    # docker-py's prunes hit the same endpoints
    client = daemon.client()
    assert client.networks.prune() == {"NetworksDeleted": []}
    assert client.api.prune_builds() == {"CachesDeleted": [], "SpaceReclaimed": 0}
    df = client.df()  # docker-py speaks the daemon's API version: the 1.52+ summaries
    assert df["ImageUsage"] == {"ActiveCount": 0, "TotalCount": 0, "Reclaimable": 0, "TotalSize": 0}
    assert df["VolumeUsage"]["TotalCount"] == 1 and df["ContainerUsage"]["TotalCount"] == 0


def test_pull_run_rmi_returns_the_disk_to_its_baseline(daemon: Daemon, registry: Registry) -> None:
    root = daemon.root
    ref = registry.ref("gc/bb:1")
    ok(daemon.docker("tag", "busybox", ref))
    ok(daemon.docker("push", ref))
    ok(daemon.docker("rmi", "busybox", ref))
    empty = disk_bytes(root)
    assert snapshot_dirs(root) == set()

    ok(daemon.docker("pull", ref))
    ok(daemon.docker("run", "--rm", ref, "true"))
    settled(root, 1)
    assert disk_bytes(root) > empty + 1_000_000  # the layer blob and its unpacked copy
    ok(daemon.docker("rmi", ref))
    assert snapshot_dirs(root) == set()
    assert not list((root / "images" / "content" / "blobs" / "sha256").iterdir())
    assert not list((root / "images" / "content" / "ingest").iterdir())
    assert abs(disk_bytes(root) - empty) < 64 * 1024, (disk_bytes(root), empty)


def test_daemon_start_collects_what_a_killed_removal_left(daemon: Daemon) -> None:
    from bulkhead.images.content import ContentStore
    from bulkhead.images.store import UNPACKED_LABEL
    from bulkhead.snapshots import open_snapshotter

    root = daemon.root
    ok(daemon.docker("run", "--rm", "busybox", "true"))
    kept = settled(root, 1)
    daemon.stop(kill=True)
    # what a daemon killed between an image's removal and its collection leaves: a blob
    # and an unpacked layer no image names
    orphan = ContentStore(root / "images" / "content").write_blob(os.urandom(300_000))
    [driver] = [p.name for p in (root / "snapshots").iterdir()]
    snap = open_snapshotter(driver, str(root / "snapshots"))
    try:
        mounts = snap.prepare("extract-x sha256:" + "0" * 64)
        target = mounts[0].source if mounts[0].type == "bind" else None
        if target is None:
            target = next(
                o.split("=", 1)[1] for o in mounts[0].options if o.startswith("upperdir=")
            )
        Path(target, "junk").write_bytes(os.urandom(300_000))
        snap.commit(
            "sha256:" + "0" * 64, "extract-x sha256:" + "0" * 64, labels={UNPACKED_LABEL: "x"}
        )
    finally:
        snap.close()
    assert blob_path(root, orphan).exists() and len(snapshot_dirs(root)) == 2
    daemon.start()
    assert not blob_path(root, orphan).exists()
    assert snapshot_dirs(root) == kept
    ok(daemon.docker("run", "--rm", "busybox", "true"))


def test_system_prune_filters_reach_every_kind(daemon: Daemon) -> None:
    ok(daemon.docker("run", "--name", "marked", "--label", "gc=yes", "busybox", "true"))
    ok(daemon.docker("run", "--name", "plain", "busybox", "true"))
    ok(daemon.docker("run", "--name", "maker", "busybox", "touch", "/x"))
    ok(daemon.docker("commit", "--change", "LABEL gc=yes", "maker", "marked-image:1"))
    ok(daemon.docker("commit", "maker", "plain-image:1"))
    ok(daemon.docker("rm", "maker"))
    for cli in (daemon.bulkhead, daemon.docker):
        out = ok(cli("system", "prune", "-a", "-f", "--filter", "label=gc=yes"))
        if cli is daemon.bulkhead:
            assert "Deleted Containers:\n" in out and "untagged: marked-image:1" in out
    names = ok(daemon.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert names == ["plain"]
    repos = ok(daemon.docker("images", "--format", "{{.Repository}}")).split()
    assert sorted(repos) == ["busybox", "plain-image"]
    # until: nothing created in the future
    out = ok(daemon.bulkhead("system", "prune", "-a", "-f", "--filter", "until=2000-01-01"))
    assert out == "Total reclaimed space: 0B\n"
