"""The offline busybox image: reproducible, complete, readable by OCI tools."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from bulkhead.devtools.busybox import BUSYBOX
from bulkhead.images import busybox

pytestmark = pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static")


def test_digest_stable_across_builds() -> None:
    a = busybox.make_busybox_image()
    b = busybox.make_busybox_image()
    assert a.layer == b.layer
    assert a.manifest_digest == b.manifest_digest
    assert a.config_digest == b.config_digest
    assert a.index_digest == b.index_digest


def test_layer_contents_and_metadata() -> None:
    image = busybox.make_busybox_image()
    raw = gzip.decompress(image.layer)
    assert busybox.sha256_digest(raw) == image.diff_id
    # gzip header: mtime 0 and no file name, so the blob does not depend on the clock.
    assert image.layer[4:8] == b"\0\0\0\0"
    assert image.layer[3] & 0x08 == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    by_name = {m.name: m for m in members}
    for name in ("bin/busybox", "etc/passwd", "etc/group", "tmp", "root", "proc", "sys", "dev"):
        assert name in by_name, name
    assert by_name["tmp"].mode == 0o1777
    assert by_name["bin/busybox"].mode == 0o755
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "busybox"
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert len({m.mtime for m in members}) == 1
    applets = busybox.busybox_applets_list()
    assert all(f"bin/{a}" in by_name for a in applets)


def test_config_manifest_index() -> None:
    image = busybox.make_busybox_image()
    config = json.loads(image.config)
    plat = busybox.host_platform()
    assert config["architecture"] == plat["architecture"]
    assert config["os"] == "linux"
    assert config["config"]["Cmd"] == ["sh"]
    assert config["config"]["Env"][0].startswith("PATH=")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [image.diff_id]}
    manifest = json.loads(image.manifest)
    assert manifest["config"]["digest"] == image.config_digest
    assert manifest["layers"][0]["digest"] == image.layer_digest
    assert manifest["layers"][0]["size"] == len(image.layer)
    index = json.loads(image.index)
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert index["manifests"][0]["platform"] == plat


def test_oci_layout(tmp_path: Path) -> None:
    digest = busybox.write_oci_layout(tmp_path / "oci")
    root = tmp_path / "oci"
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    desc = index["manifests"][0]
    assert desc["digest"] == digest
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    for blob in (root / "blobs" / "sha256").iterdir():
        assert busybox.sha256_digest(blob.read_bytes()) == "sha256:" + blob.name


def test_cli_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        busybox.main([])
    assert "--store" in capsys.readouterr().err
