"""Docker's volume and bind syntaxes (-v, --mount, --volumes-from) and resolve_mounts, without root.

The expected error texts are moby's (volume/mounts/linux_parser.go, validate.go,
volume/local); a VolumeStore in the test's temporary directory stands in for
the daemon's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bulkhead.engine.mounts import (
    ResolvedMounts,
    apply_to_spec,
    convert_tmpfs_options,
    copy_up,
    merge_tmpfs_options,
    parse_bind,
    parse_mount,
    parse_mount_flag,
    parse_volumes_from,
    resolve_mounts,
    undo,
    valid_mode,
)
from bulkhead.engine.volumes import ANONYMOUS_LABEL, VolumeStore, validate_name
from bulkhead.errors import NoSuchContainer, NoSuchVolume, SpecError, VolumeInUse

CID = "c" * 64
CID2 = "d" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    s = VolumeStore(tmp_path / "volumes")
    yield s
    s.close()


@dataclass
class FakeContainer:
    id: str
    mount_points: list[dict[str, Any]] = field(default_factory=list)


# --- -v / Binds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "ok"),
    [
        ("", True),
        ("ro", True),
        ("rw,z", True),
        ("ro,Z,rshared,nocopy,cached", True),
        ("ro-non-recursive", True),
        ("ro,rw", False),  # two read-write words
        ("z,Z", False),
        ("shared,slave", False),
        ("bogus", False),
        ("ro,", False),
    ],
)
def test_valid_mode(mode: str, ok: bool) -> None:
    assert valid_mode(mode) is ok


def test_bind_host_path() -> None:
    mp = parse_bind("/host/dir/:/data:ro")
    assert (mp.type, mp.source, mp.destination, mp.rw) == ("bind", "/host/dir", "/data", False)
    assert mp.mode == "ro" and mp.propagation == "rprivate" and mp.create_source


def test_bind_propagation_and_cleaned_destination() -> None:
    mp = parse_bind("/h:/a/b/../c/:rshared")
    assert mp.destination == "/a/c" and mp.propagation == "rshared" and mp.rw


def test_named_volume_gets_docker_default_mode_z() -> None:
    mp = parse_bind("data:/var/lib/data")
    assert (mp.type, mp.name, mp.mode, mp.copy_data) == ("volume", "data", "z", True)
    ro = parse_bind("data:/d:ro,nocopy")
    assert ro.mode == "ro,nocopy" and not ro.rw and not ro.copy_data


def test_anonymous_volume_destination_only() -> None:
    mp = parse_bind("/cache")
    assert (mp.type, mp.name, mp.destination, mp.mode) == ("volume", "", "/cache", "")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (":/x", "invalid volume specification: ':/x'"),
        ("/foo:rw", "invalid volume specification: '/foo:rw'"),
        ("a:/b:ro:x", "invalid volume specification: 'a:/b:ro:x'"),
        ("/h:/d:bogus", "invalid mode: bogus"),
        (
            "/h:relative",
            "invalid volume specification: '/h:relative': invalid mount config for type "
            "\"bind\": invalid mount path: 'relative' mount path must be absolute",
        ),
        (
            "/h:/",
            "invalid volume specification: '/h:/': invalid mount config for type \"bind\": "
            "invalid specification: destination can't be '/'",
        ),
        (
            "/d:ro",
            "invalid volume specification: '/d:ro'",
        ),
        (
            "/h:/d:nocopy",
            "invalid volume specification: '/h:/d:nocopy': invalid mount config for type "
            '"bind": field VolumeOptions must not be specified',
        ),
        (
            "name:/d:rshared",
            "invalid volume specification: 'name:/d:rshared': invalid mount config for type "
            '"volume": field BindOptions must not be specified',
        ),
        (
            "/d:/d2:ro,rw",
            "invalid mode: ro,rw",
        ),
    ],
)
def test_bind_errors(raw: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_bind(raw)
    assert str(exc.value) == message


# --- --mount / Mounts -------------------------------------------------------------


def test_mount_bind_source_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpecError) as exc:
        parse_mount({"Type": "bind", "Source": str(missing), "Target": "/x"})
    assert str(exc.value) == (
        f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    )
    mp = parse_mount(
        {
            "Type": "bind",
            "Source": str(missing),
            "Target": "/x",
            "BindOptions": {"CreateMountpoint": True},
        }
    )
    assert mp.create_source


def test_mount_bind_options(tmp_path: Path) -> None:
    mp = parse_mount(
        {
            "Type": "bind",
            "Source": str(tmp_path),
            "Target": "/x",
            "ReadOnly": True,
            "BindOptions": {"Propagation": "rslave", "NonRecursive": True},
        }
    )
    assert not mp.rw and mp.propagation == "rslave" and mp.nonrecursive and mp.mode == ""


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"Type": "nfs", "Target": "/x"},
            'invalid mount config for type "nfs": mount type unknown',
        ),
        (
            {"Type": "volume", "Target": ""},
            'invalid mount config for type "volume": field Target must not be empty',
        ),
        (
            {"Type": "bind", "Target": "/x"},
            'invalid mount config for type "bind": field Source must not be empty',
        ),
        (
            {"Type": "volume", "Target": "/x", "ReadOnly": True},
            'invalid mount config for type "volume": must not set ReadOnly mode when using '
            "anonymous volumes",
        ),
        (
            {"Type": "volume", "Target": "/x", "BindOptions": {}},
            'invalid mount config for type "volume": field BindOptions must not be specified',
        ),
        (
            {"Type": "tmpfs", "Target": "/x", "Source": "a"},
            'invalid mount config for type "tmpfs": field Source must not be specified',
        ),
        (
            {"Type": "bind", "Source": "/", "Target": "/x", "BindOptions": {"Propagation": "up"}},
            'invalid mount config for type "bind": invalid propagation mode: up',
        ),
        (
            {"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "../a"}},
            'invalid mount config for type "volume": subpath must be a relative path within '
            "the volume",
        ),
    ],
)
def test_mount_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_mount(doc)
    assert str(exc.value) == message


def test_tmpfs_options_as_docker_converts_them() -> None:
    assert convert_tmpfs_options({"SizeBytes": 64 << 20, "Mode": 0o1777}, True) == (
        "ro,mode=1777,size=64m"
    )
    assert convert_tmpfs_options({"SizeBytes": 1000, "Options": [["exec"]]}, False) == (
        "size=1000,exec"
    )
    with pytest.raises(SpecError, match="invalid option: uid"):
        convert_tmpfs_options({"Options": [["uid", "1"]]}, False)


def test_merge_tmpfs_options_later_flag_wins() -> None:
    words = ["noexec", "nosuid", "nodev", "rprivate", "exec", "size=1m", "size=2m", "rshared"]
    assert merge_tmpfs_options(words) == ["nosuid", "nodev", "exec", "size=2m", "rshared"]


# --- --volumes-from ---------------------------------------------------------------


def test_volumes_from_modes() -> None:
    assert parse_volumes_from("web") == ("web", "rw")
    assert parse_volumes_from("web:ro") == ("web", "ro")
    for bad in ("web:rshared", "web:nocopy", "web:bogus"):
        with pytest.raises(SpecError, match="invalid mode"):
            parse_volumes_from(bad)
    with pytest.raises(SpecError, match="cannot be an empty string"):
        parse_volumes_from("")


# --- the CLI's --mount syntax -----------------------------------------------------


def test_mount_flag_bind() -> None:
    assert parse_mount_flag("type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave") == {
        "Type": "bind",
        "Source": "/a",
        "Target": "/b",
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rslave"},
    }


def test_mount_flag_volume_defaults_and_options() -> None:
    doc = parse_mount_flag(
        'target=/d,source=v,volume-nocopy,volume-label=a=b,"volume-opt=o=size=1m,uid=1",'
        "volume-opt=type=tmpfs"
    )
    assert doc == {
        "Type": "volume",
        "Source": "v",
        "Target": "/d",
        "VolumeOptions": {
            "NoCopy": True,
            "Labels": {"a": "b"},
            "DriverConfig": {"Options": {"o": "size=1m,uid=1", "type": "tmpfs"}},
        },
    }


def test_mount_flag_tmpfs() -> None:
    assert parse_mount_flag("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770") == {
        "Type": "tmpfs",
        "Target": "/t",
        "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1770},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=bind,src=/a", "target is required"),
        ("type=bind,dst=/b,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        ("type=bind,dst=/b,src", "invalid field 'src' must be a key=value pair"),
        ("type=bind,dst=/b,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
    ],
)
def test_mount_flag_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("*", r"\*")):
        parse_mount_flag(text)


# --- volume names -----------------------------------------------------------------


def test_volume_names() -> None:
    validate_name("my_vol-1.x")
    with pytest.raises(SpecError) as exc:
        validate_name("./x")
    assert str(exc.value) == (
        'create ./x: "./x" includes invalid characters for a local volume name, only '
        '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
        "use absolute path"
    )
    with pytest.raises(SpecError, match="volume name is too short"):
        validate_name("a")


# --- resolve_mounts ---------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("from the image\n")
    (root / "data" / "link").symlink_to("/etc/passwd")
    os.chmod(root / "data", 0o750)
    (root / "etc").mkdir()
    (root / "etc" / "file").write_text("x")
    (root / "escape").symlink_to("../../..")  # must not lead out of the rootfs
    return root


def test_named_volume_created_used_and_copied_up(store: VolumeStore, rootfs: Path) -> None:
    r = resolve_mounts({"Binds": ["data:/data"]}, None, CID, str(rootfs), store)
    mountpoint = store.mountpoint("data")
    assert r.volumes_used == ["data"] and store.refs("data") == [CID]
    assert r.oci_mounts == [
        {"destination": "/data", "type": "bind", "source": mountpoint, "options": ["rbind"]}
    ]
    assert r.mount_points == [
        {
            "Type": "volume",
            "Name": "data",
            "Source": mountpoint,
            "Destination": "/data",
            "Driver": "local",
            "Mode": "z",
            "RW": True,
            "Propagation": "",
        }
    ]
    # copy-up: the image's files, the symlink as a symlink, the directory's mode
    assert (Path(mountpoint) / "a.txt").read_text() == "from the image\n"
    assert os.readlink(Path(mountpoint) / "link") == "/etc/passwd"
    assert (Path(mountpoint) / "sub").is_dir()
    assert os.stat(mountpoint).st_mode & 0o7777 == 0o750


def test_copy_up_only_into_an_empty_volume(store: VolumeStore, rootfs: Path) -> None:
    store.create("data")
    (Path(store.mountpoint("data")) / "mine").write_text("kept")
    resolve_mounts({"Binds": ["data:/data"]}, None, CID, str(rootfs), store)
    assert sorted(os.listdir(store.mountpoint("data"))) == ["mine"]


def test_nocopy_and_missing_image_path(store: VolumeStore, rootfs: Path) -> None:
    resolve_mounts({"Binds": ["a1:/data:nocopy", "a2:/nowhere"]}, None, CID, str(rootfs), store)
    assert os.listdir(store.mountpoint("a1")) == []
    assert os.listdir(store.mountpoint("a2")) == []


def test_copy_up_stays_inside_the_rootfs(tmp_path: Path, rootfs: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    # /escape -> ../../.. resolves to the rootfs itself, never to the host's /
    assert copy_up(str(rootfs), "/escape", str(vol))
    assert sorted(os.listdir(vol)) == ["data", "escape", "etc"]


def test_anonymous_volumes_for_image_volumes(store: VolumeStore, rootfs: Path) -> None:
    r = resolve_mounts({}, {"/data": {}, "/cache/": {}}, CID, str(rootfs), store)
    assert len(r.volumes_used) == 2 and r.volumes_created == r.volumes_used
    for name in r.volumes_used:
        assert len(name) == 64 and store.get(name).labels == {ANONYMOUS_LABEL: ""}
    by_dest = {m["Destination"]: m for m in r.mount_points}
    assert set(by_dest) == {"/data", "/cache"} and by_dest["/data"]["Mode"] == ""
    assert (Path(by_dest["/data"]["Source"]) / "a.txt").exists()  # copied up too


def test_image_volume_over_a_file_is_refused(store: VolumeStore, rootfs: Path) -> None:
    with pytest.raises(SpecError, match="cannot mount volume over existing file"):
        resolve_mounts({}, {"/etc/file": {}}, CID, str(rootfs), store)
    assert store.volumes() == []


def test_binds_win_over_image_volumes(store: VolumeStore, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    r = resolve_mounts({"Binds": [f"{host}:/data:ro"]}, {"/data": {}}, CID, None, store)
    assert r.volumes_used == [] and store.volumes() == []
    assert r.oci_mounts == [
        {"destination": "/data", "type": "bind", "source": str(host),
         "options": ["rbind", "rro", "rprivate"]}
    ]  # fmt: skip
    assert r.mount_points[0]["Mode"] == "ro" and r.mount_points[0]["RW"] is False


def test_bind_source_created_for_v_not_for_mount(store: VolumeStore, tmp_path: Path) -> None:
    missing = tmp_path / "made" / "here"
    resolve_mounts({"Binds": [f"{missing}:/m"]}, None, CID, None, store)
    assert missing.is_dir()
    with pytest.raises(SpecError, match="bind source path does not exist"):
        resolve_mounts(
            {"Mounts": [{"Type": "bind", "Source": str(tmp_path / "no"), "Target": "/m"}]},
            None,
            CID,
            None,
            store,
        )


def test_duplicate_mount_points(store: VolumeStore, tmp_path: Path) -> None:
    for hc in (
        {"Binds": ["a1:/d", "a2:/d/"]},
        {"Binds": ["a1:/d"], "Mounts": [{"Type": "volume", "Target": "/d"}]},
        {"Binds": ["a1:/d"], "Tmpfs": {"/d": ""}},
    ):
        with pytest.raises(SpecError, match="Duplicate mount point: /d"):
            resolve_mounts(hc, None, CID, None, store)
    assert store.volumes() == []


def test_volume_driver_applies_to_v_volumes(store: VolumeStore) -> None:
    with pytest.raises(SpecError, match='plugin "flocker" not found'):
        resolve_mounts({"Binds": ["fv:/f"], "VolumeDriver": "flocker"}, None, CID, None, store)
    assert store.volumes() == []


def test_mount_volume_with_driver_options_and_labels(store: VolumeStore) -> None:
    r = resolve_mounts(
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "lab",
                    "Target": "/l",
                    "ReadOnly": True,
                    "VolumeOptions": {"Labels": {"k": "v"}, "NoCopy": True},
                }
            ]
        },
        None,
        CID,
        None,
        store,
    )
    assert store.get("lab").labels == {"k": "v"}
    assert r.oci_mounts[0]["options"] == ["rbind", "rro"]
    assert r.mount_points[0]["Mode"] == "" and r.mount_points[0]["RW"] is False


def test_volume_subpath(store: VolumeStore) -> None:
    store.create("sv")
    (Path(store.mountpoint("sv")) / "inner").mkdir()
    r = resolve_mounts(
        {"Mounts": [{"Type": "volume", "Source": "sv", "Target": "/s",
                     "VolumeOptions": {"Subpath": "inner"}}]},
        None, CID, None, store,
    )  # fmt: skip
    assert r.oci_mounts[0]["source"] == os.path.join(store.mountpoint("sv"), "inner")
    with pytest.raises(SpecError, match="volume subpath does not exist"):
        resolve_mounts(
            {"Mounts": [{"Type": "volume", "Source": "sv", "Target": "/s",
                         "VolumeOptions": {"Subpath": "missing"}}]},
            None, CID2, None, store,
        )  # fmt: skip
    assert store.refs("sv") == [CID]


def test_tmpfs_mount(store: VolumeStore) -> None:
    r = resolve_mounts(
        {"Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20}}]},
        None,
        CID,
        None,
        store,
    )
    assert r.oci_mounts == [
        {"destination": "/t", "type": "tmpfs", "source": "tmpfs",
         "options": ["noexec", "nosuid", "nodev", "rprivate", "size=1m"]}
    ]  # fmt: skip
    assert r.mount_points == [
        {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
         "Propagation": ""}
    ]  # fmt: skip


def test_volumes_from(store: VolumeStore, tmp_path: Path) -> None:
    host = tmp_path / "h"
    host.mkdir()
    first = resolve_mounts(
        {"Binds": ["shared:/shared", f"{host}:/host", "other:/other:ro"]}, None, CID, None, store
    )
    web = FakeContainer(CID, first.mount_points)
    looked_up: list[str] = []

    def lookup(ref: str) -> FakeContainer:
        looked_up.append(ref)
        if ref != "web":
            raise NoSuchContainer(f"No such container: {ref}")
        return web

    r = resolve_mounts(
        {"VolumesFrom": ["web:ro"], "Binds": ["mine:/other"]}, None, CID2, None, store, lookup
    )
    assert looked_up == ["web"]
    by_dest = {m["Destination"]: m for m in r.mount_points}
    assert by_dest["/shared"]["Name"] == "shared" and by_dest["/shared"]["RW"] is False
    assert by_dest["/host"]["Source"] == str(host) and by_dest["/host"]["RW"] is False
    assert by_dest["/other"]["Name"] == "mine"  # the container's own -v wins
    assert store.refs("shared") == sorted([CID, CID2])
    assert store.refs("other") == [CID]
    # rw inherits the original's read-only
    r2 = resolve_mounts({"VolumesFrom": ["web"]}, None, "e" * 64, None, store, lookup)
    assert {m["Destination"]: m["RW"] for m in r2.mount_points} == {
        "/shared": True, "/host": True, "/other": False
    }  # fmt: skip
    with pytest.raises(SpecError, match=r"^No such container: nope$"):
        resolve_mounts({"VolumesFrom": ["nope"]}, None, "f" * 64, None, store, lookup)


def test_failure_gives_back_what_it_took(store: VolumeStore, tmp_path: Path) -> None:
    store.create("keep")
    with pytest.raises(SpecError, match="bind source path does not exist"):
        resolve_mounts(
            {
                "Binds": ["keep:/k", "newnamed:/n"],
                "Mounts": [{"Type": "bind", "Source": str(tmp_path / "x"), "Target": "/x"}],
            },
            {"/anon": {}},
            CID,
            None,
            store,
        )
    # parse errors come before any volume is touched
    assert [v.name for v in store.volumes()] == ["keep"]
    with pytest.raises(NoSuchVolume):
        resolve_mounts(
            {"VolumesFrom": ["web"], "Binds": ["newnamed:/n"]},
            {"/anon": {}},
            CID,
            None,
            store,
            lambda ref: FakeContainer(CID2, [{"Type": "volume", "Name": "gone",
                                              "Destination": "/z/deep", "RW": True}]),
        )  # fmt: skip
    # the named volume made on the way stays (as Docker); the anonymous one is gone; no refs
    assert [v.name for v in store.volumes()] == ["keep", "newnamed"]
    assert store.volumes_of(CID) == []


def test_undo_and_release_container(store: VolumeStore) -> None:
    r = resolve_mounts({"Binds": ["named:/n"]}, {"/a": {}}, CID, None, store)
    anon = [n for n in r.volumes_used if n != "named"]
    with pytest.raises(VolumeInUse) as exc:
        store.remove("named")
    assert str(exc.value) == f"remove named: volume is in use - [{CID}]"
    assert store.release_container(CID, remove_anonymous=True) == anon
    assert [v.name for v in store.volumes()] == ["named"]
    r = resolve_mounts({}, {"/a": {}}, CID, None, store)
    undo(r, CID, store)
    assert [v.name for v in store.volumes()] == ["named"]


def test_apply_to_spec() -> None:
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/data/tmp", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {},
    }
    resolved = ResolvedMounts(
        oci_mounts=[
            {"destination": "/dev/shm", "type": "bind", "source": "/s", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/d", "options": ["rbind"]},
        ],
        rootfs_propagation="rslave",
        tmpfs_destinations=["/data/tmp"],
    )
    out = apply_to_spec(spec, resolved)
    assert [(m["destination"], m["source"]) for m in out["mounts"]] == [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/data", "/d"),
        ("/data/tmp", "tmpfs"),  # the --tmpfs inside a volume comes after the volume
        ("/dev/shm", "/s"),  # replaced the default /dev/shm
    ]
    assert out["linux"]["rootfsPropagation"] == "rslave"


# --- the store ---------------------------------------------------------------------


def test_store_list_filters_and_prune(store: VolumeStore) -> None:
    store.create("alpha", labels={"team": "a"})
    store.create("beta", labels={"team": "b", "keep": ""})
    anon = store.create(anonymous=True).name
    store.use("beta", CID)

    def names(filters: dict[str, list[str]]) -> list[str]:
        return [v["Name"] for v in store.list(filters)]

    assert names({}) == sorted(["alpha", "beta", anon])
    assert names({"dangling": ["true"]}) == sorted(["alpha", anon])
    assert names({"dangling": ["0"]}) == ["beta"]
    assert names({"name": ["al"]}) == ["alpha"]
    assert names({"label": ["team=b"]}) == ["beta"]
    assert names({"label": ["team"], "label!": ["keep"]}) == ["alpha"]
    assert names({"driver": ["local"]}) == sorted(["alpha", "beta", anon])
    with pytest.raises(SpecError, match="invalid filter 'bogus'"):
        store.list({"bogus": ["1"]})
    (Path(store.mountpoint(anon)) / "f").write_bytes(b"x" * 1000)
    assert store.prune() == {"VolumesDeleted": [anon], "SpaceReclaimed": 1000}
    assert store.prune({"all": ["true"], "label!": ["team=a"]}) == {
        "VolumesDeleted": [],
        "SpaceReclaimed": 0,
    }  # fmt: skip  (beta is in use)
    assert store.prune({"all": ["true"]})["VolumesDeleted"] == ["alpha"]
    assert not (store.root / "alpha").exists()


def test_store_inspect_shape_and_get_or_create(store: VolumeStore) -> None:
    v = store.create("vol", labels={"a": "b"})
    doc = store.inspect("vol")
    assert doc["Name"] == "vol" and doc["Driver"] == "local" and doc["Scope"] == "local"
    assert doc["Mountpoint"] == str(store.root / "vol" / "_data") and doc["Labels"] == {"a": "b"}
    assert doc["Options"] is None and doc["CreatedAt"].endswith("Z")
    assert store.create("vol", labels={"other": "x"}) == v  # existing: returned as it is
    json.dumps(doc)
    with pytest.raises(NoSuchVolume, match="get nope: no such volume"):
        store.inspect("nope")
    store.remove("nope", force=True)  # force: a missing volume is no error


def test_store_options_are_validated(store: VolumeStore) -> None:
    with pytest.raises(SpecError, match='invalid option: "bogus"'):
        store.create("v1", driver_opts={"bogus": "1"})
    with pytest.raises(SpecError, match='missing required option: "device"'):
        store.create("v1", driver_opts={"type": "tmpfs"})
    with pytest.raises(SpecError, match='plugin "nfs" not found'):
        store.create("v1", driver="nfs")
    assert store.volumes() == [] and not (store.root / "v1").exists()


def test_store_reconcile_and_orphans(tmp_path: Path) -> None:
    s = VolumeStore(tmp_path / "v")
    s.create("xx")
    s.use("xx", CID)
    s.use("xx", CID2)
    half_made = s.create(anonymous=True).name
    s.use(half_made, CID2)
    assert s.reconcile({CID}) == [CID2]
    assert s.refs("xx") == [CID]
    assert [v.name for v in s.volumes()] == ["xx"]  # the gone container's anonymous volume too
    s.close()
    (tmp_path / "v" / "half" / "_data").mkdir(parents=True)  # a crash between mkdir and commit
    (tmp_path / "v" / "notours" / "_data").mkdir(parents=True)
    (tmp_path / "v" / "notours" / "_data" / "keep").write_text("data")
    s = VolumeStore(tmp_path / "v")
    assert not (tmp_path / "v" / "half").exists() and s.refs("xx") == [CID]
    assert (tmp_path / "v" / "notours" / "_data" / "keep").exists()  # never delete data
    s.close()


# --- the API handlers, without a server ---------------------------------------------


def _call(router: Any, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    import asyncio

    from bulkhead.api.errors import status_for
    from bulkhead.api.routes import Request, Response, parse_target

    version, path, query = parse_target(target)
    handler, params = router.match(method, path)
    req = Request(
        method=method,
        path=path,
        version=version,
        query=query,
        headers={},
        body=b"" if body is None else json.dumps(body).encode(),
        params=params,
    )
    try:
        reply = asyncio.run(handler(req))
    except Exception as exc:  # what the server turns into Docker's error reply
        return status_for(exc), {"message": str(exc)}
    assert isinstance(reply, Response)
    doc = json.loads(reply.body) if reply.body else None
    return reply.status, doc


def test_volume_api_handlers(store: VolumeStore) -> None:
    from bulkhead.api.routes import Router
    from bulkhead.api.volumes import register_store

    router = Router()
    register_store(router, store)
    status, doc = _call(router, "POST", "/v1.45/volumes/create",
                        {"Name": "apivol", "Labels": {"a": "b"}})  # fmt: skip
    assert status == 201 and doc["Name"] == "apivol" and doc["Labels"] == {"a": "b"}
    status, doc = _call(router, "POST", "/volumes/create", None)  # no body: a random name
    assert status == 201 and len(doc["Name"]) == 64
    assert _call(router, "POST", "/volumes/create", {"Name": 5}) == (
        400, {"message": "invalid Name: must be a string"}
    )  # fmt: skip
    assert _call(router, "POST", "/volumes/create", {"DriverOpts": {"o": 1}})[0] == 400
    assert _call(router, "POST", "/volumes/create", {"Name": "a/b"})[0] == 400
    status, doc = _call(router, "GET", '/volumes?filters={"label":["a=b"]}')
    assert status == 200 and [v["Name"] for v in doc["Volumes"]] == ["apivol"]
    assert doc["Warnings"] == []
    assert _call(router, "GET", "/volumes?filters={bad")[0] == 400
    assert _call(router, "GET", "/volumes/nope") == (404, {"message": "get nope: no such volume"})
    store.use("apivol", CID)
    assert _call(router, "DELETE", "/volumes/apivol")[0] == 409
    store.release("apivol", CID)
    assert _call(router, "DELETE", "/volumes/apivol") == (204, None)
    assert _call(router, "DELETE", "/volumes/apivol?force=1") == (204, None)
    # prune: named volumes only with all=true, or for clients older than API 1.42
    store.create("named1")
    assert _call(router, "POST", "/v1.45/volumes/prune")[1]["VolumesDeleted"] == []
    before = sorted(v.name for v in store.volumes())
    assert len(before) == 2  # named1 and the randomly named one
    assert _call(router, "POST", "/v1.41/volumes/prune")[1]["VolumesDeleted"] == before
    assert store.volumes() == []
