"""The content store: verifying writer, resume, reading, gc, fsck (single process)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from bulkhead.errors import (
    BlobNotFound,
    ContentError,
    DigestMismatch,
    InvalidDigest,
    SizeMismatch,
)
from bulkhead.images import content
from bulkhead.images.content import ContentStore, IngestLocked, digest_of, image_children

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def sha(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def blob_files(store: ContentStore) -> list[Path]:
    return sorted(p for p in Path(store.root, "blobs").rglob("*") if p.is_file())


# --- digests ------------------------------------------------------------------------


def test_digest_of() -> None:
    assert digest_of(b"") == EMPTY_SHA256
    assert digest_of(b"abc", "sha512") == sha(b"abc", "sha512")
    with pytest.raises(InvalidDigest):
        digest_of(b"", "md5")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "sha256:" + "g" * 64,
        "sha256:../../../../etc/passwd",
    ],
)
def test_invalid_digests_refused(store: ContentStore, bad: str) -> None:
    with pytest.raises(InvalidDigest):
        store.exists(bad)
    with pytest.raises(InvalidDigest):
        store.writer("r", bad)


# --- the verifying writer ---------------------------------------------------------------


def test_write_and_commit(store: ContentStore) -> None:
    data = b"hello, content store\n" * 1000
    w = store.writer("ref-1", sha(data), len(data))
    assert w.offset == 0 and not w.exists
    w.write(data[:100])
    w.write(data[100:])
    assert w.offset == len(data)
    d = w.commit()
    assert d == sha(data)
    assert store.exists(d)
    assert store.read(d) == data
    assert store.read(d, verify=True) == data
    info = store.info(d)
    assert info.size == len(data) and info.digest == d
    p = store.path(d)
    assert p == os.path.join(store.root, "blobs", "sha256", d.split(":")[1])
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o444
    assert store.ingests() == []
    assert os.listdir(os.path.join(store.root, "ingest")) == []


def test_commit_sha512(store: ContentStore) -> None:
    data = os.urandom(5000)
    w = store.writer("ref-512", sha(data, "sha512"))
    assert w.algorithm == "sha512"
    w.write(data)
    d = w.commit(sha(data, "sha512"), len(data))
    assert d.startswith("sha512:") and len(d) == 7 + 128
    assert Path(store.root, "blobs", "sha512", d[7:]).read_bytes() == data
    assert [b.digest for b in store.walk()] == [d]


def test_commit_with_other_algorithm_than_opened(store: ContentStore) -> None:
    # Opened without expectations (sha256 by default), committed as sha512: hashed again.
    data = b"x" * 3000
    w = store.writer("ref")
    w.write(data)
    assert w.commit(sha(data, "sha512")) == sha(data, "sha512")


def test_commit_wrong_digest(store: ContentStore) -> None:
    data = b"the real content"
    wrong = sha(b"something else")
    w = store.writer("ref", wrong, len(data))
    w.write(data)
    with pytest.raises(DigestMismatch) as e:
        w.commit()
    assert e.value.expected == wrong
    assert e.value.actual == sha(data)
    assert wrong in str(e.value) and sha(data) in str(e.value)
    assert isinstance(e.value, ContentError)
    assert blob_files(store) == []
    assert store.ingests() == []


def test_commit_wrong_digest_given_at_commit(store: ContentStore) -> None:
    w = store.writer("ref")
    w.write(b"abc")
    with pytest.raises(DigestMismatch):
        w.commit(sha(b"abd"), 3)
    assert blob_files(store) == [] and store.ingests() == []


def test_commit_truncated(store: ContentStore) -> None:
    data = os.urandom(10000)
    w = store.writer("ref", sha(data), len(data))
    w.write(data[:9000])
    with pytest.raises(SizeMismatch) as e:
        w.commit()
    assert (e.value.expected, e.value.actual) == (10000, 9000)
    assert "9000" in str(e.value) and "10000" in str(e.value)
    assert blob_files(store) == [] and store.ingests() == []


def test_write_past_expected_size(store: ContentStore) -> None:
    data = b"0123456789"
    w = store.writer("ref", sha(data), 5)
    with pytest.raises(SizeMismatch) as e:
        w.write(data)
    assert e.value.expected == 5
    assert store.ingests() == [] and blob_files(store) == []
    with pytest.raises(ContentError):
        w.write(b"more")  # the writer is closed


def test_commit_size_given_at_commit(store: ContentStore) -> None:
    w = store.writer("ref")
    w.write(b"abcdef")
    with pytest.raises(SizeMismatch):
        w.commit(sha(b"abcdef"), 7)


def test_abort(store: ContentStore) -> None:
    w = store.writer("ref")
    w.write(b"partial")
    assert [s.ref for s in store.ingests()] == ["ref"]
    w.abort()
    assert store.ingests() == []
    # The ref is free again.
    store.writer("ref", timeout=0).abort()


def test_write_blob(store: ContentStore) -> None:
    d = store.write_blob(b"config")
    assert d == sha(b"config") and store.read(d) == b"config"
    assert store.write_blob(b"config", d) == d  # already there
    with pytest.raises(DigestMismatch):
        store.write_blob(b"config", sha(b"other"))
    assert store.write_blob(b"", EMPTY_SHA256) == EMPTY_SHA256
    assert store.info(EMPTY_SHA256).size == 0
    assert store.ingests() == []


def test_ingest_from(store: ContentStore) -> None:
    data = os.urandom(3 * content.BUFFER_SIZE + 123)  # several buffers: the hashing thread
    d = store.ingest_from(io.BytesIO(data), sha(data), len(data))
    assert d == sha(data) and store.read(d) == data
    small = b"tiny"
    assert store.ingest_from(io.BytesIO(small)) == sha(small)


def test_write_from_limit_and_pipeline(store: ContentStore) -> None:
    data = os.urandom(10 * content.BUFFER_SIZE + 7)  # more buffers than the pipeline holds
    f = io.BytesIO(data)
    w = store.writer("r")
    assert w.write_from(f, limit=100) == 100
    assert w.offset == 100 and f.tell() == 100
    assert w.write_from(f) == len(data) - 100
    assert w.digest() == sha(data)
    assert w.commit(sha(data), len(data)) == sha(data)
    assert store.read(sha(data)) == data


def test_ingest_from_without_readinto(store: ContentStore) -> None:
    class Chunks:
        def __init__(self, data: bytes) -> None:
            self.f = io.BytesIO(data)

        def read(self, n: int = -1, /) -> bytes:
            return self.f.read(min(n, 1000))

    data = os.urandom(10_000)
    assert store.ingest_from(Chunks(data), sha(data), len(data)) == sha(data)


@pytest.mark.parametrize("extra", [-1, 1, content.BUFFER_SIZE])
def test_ingest_from_wrong_size(store: ContentStore, extra: int) -> None:
    data = os.urandom(2 * content.BUFFER_SIZE)
    with pytest.raises(SizeMismatch):
        store.ingest_from(io.BytesIO(data), sha(data), len(data) + extra)
    assert blob_files(store) == [] and store.ingests() == []


def test_ingest_from_wrong_digest(store: ContentStore) -> None:
    data = os.urandom(2 * content.BUFFER_SIZE)
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(DigestMismatch):
        store.ingest_from(io.BytesIO(bytes(bad)), sha(data), len(data))
    assert blob_files(store) == [] and store.ingests() == []


def test_ingest_from_existing_blob_does_not_read(store: ContentStore) -> None:
    d = store.write_blob(b"present")

    class Exploding(io.RawIOBase):
        def readinto(self, b: object) -> int:
            raise AssertionError("stream read although the blob was there")

    assert store.ingest_from(Exploding(), d, 7) == d


# --- resume ------------------------------------------------------------------------


def test_resume_continues_at_offset(store: ContentStore) -> None:
    data = os.urandom(50_000)
    w = store.writer("pull-x", sha(data), len(data))
    w.write(data[:20_000])
    w.close()  # interrupted: progress kept
    (st,) = store.ingests()
    assert (st.ref, st.offset, st.total, st.expected) == ("pull-x", 20_000, 50_000, sha(data))
    w = store.writer("pull-x", sha(data), len(data))
    assert w.offset == 20_000
    assert w.started == st.started
    w.write(data[20_000:])
    assert w.commit() == sha(data)
    assert store.read(sha(data)) == data


def test_resume_rehashes_data_on_disk(store: ContentStore) -> None:
    # The resumed writer's digest comes from the bytes on disk, not from memory:
    # bytes damaged while nobody wrote are caught at commit.
    data = os.urandom(30_000)
    w = store.writer("r", sha(data), len(data))
    w.write(data[:10_000])
    w.close()
    ingest_dir = Path(store._ingest_path("r"))
    with open(ingest_dir / "data", "r+b") as f:
        f.seek(5)
        f.write(b"\x00\x01\x02")
    w = store.writer("r", sha(data), len(data))
    assert w.offset == 10_000
    w.write(data[10_000:])
    with pytest.raises(DigestMismatch):
        w.commit()


def test_resume_takes_expectations_from_disk(store: ContentStore) -> None:
    data = b"a" * 1000
    w = store.writer("r", sha(data, "sha512"), len(data))
    w.write(data[:10])
    w.close()
    w = store.writer("r")
    assert (w.offset, w.total, w.expected, w.algorithm) == (10, 1000, sha(data, "sha512"), "sha512")
    w.write(data[10:])
    assert w.commit() == sha(data, "sha512")


def test_resume_other_blob_starts_over(store: ContentStore) -> None:
    w = store.writer("r", sha(b"one"), 3)
    w.write(b"on")
    w.close()
    w = store.writer("r", sha(b"two!"), 4)
    assert w.offset == 0
    w.write(b"two!")
    assert w.commit() == sha(b"two!")


def test_resume_other_blob_does_not_take_its_expectations(store: ContentStore) -> None:
    w = store.writer("r", sha(b"one"), 3)
    w.write(b"on")
    w.close()
    w = store.writer("r", sha(b"four"))  # size not given: must not become the old 3
    assert (w.offset, w.total) == (0, None)
    w.write(b"four")
    assert w.commit() == sha(b"four")


def test_resume_longer_than_expected_starts_over(store: ContentStore) -> None:
    w = store.writer("r")
    w.write(b"123456789")
    w.close()
    Path(store._ingest_path("r"), "total").unlink(missing_ok=True)
    w = store.writer("r", sha(b"1234"), 4)
    assert w.offset == 0


def test_context_manager_keeps_progress(store: ContentStore) -> None:
    with store.writer("r") as w:
        w.write(b"abc")
    assert store.ingests()[0].offset == 3


def test_close_of_empty_ingest_removes_it(store: ContentStore) -> None:
    store.writer("r", sha(b"x"), 1).close()
    assert store.ingests() == []
    assert os.listdir(os.path.join(store.root, "ingest")) == []


def test_ingest_from_resumes_seekable_stream(store: ContentStore) -> None:
    data = os.urandom(100_000)
    d = sha(data)
    w = store.writer(f"ingest-{d}", d, len(data))
    w.write(data[:40_000])
    w.close()

    class Counting(io.BytesIO):
        read_bytes = 0

        def readinto(self, b: object) -> int:
            n = super().readinto(b)  # type: ignore[arg-type]
            Counting.read_bytes += n
            return n

    assert store.ingest_from(Counting(data), d, len(data)) == d
    assert Counting.read_bytes == 60_000


# --- locks -----------------------------------------------------------------------


def test_same_ref_locked(store: ContentStore) -> None:
    w = store.writer("r")
    with pytest.raises(IngestLocked) as e:
        store.writer("r", timeout=0)
    assert e.value.ref == "r" and "locked" in str(e.value)
    t = time.monotonic()
    with pytest.raises(IngestLocked):
        store.writer("r", timeout=0.2)
    assert time.monotonic() - t >= 0.2
    w.close()
    store.writer("r", timeout=0).close()


def test_same_ref_waits_then_sees_blob(store: ContentStore) -> None:
    data = b"shared layer"
    d = sha(data)
    first = store.writer("r", d, len(data))
    result: dict[str, object] = {}

    def second() -> None:
        w = store.writer("r", d, len(data))  # blocks until `first` commits
        result["exists"] = w.exists
        result["offset"] = w.offset
        w.close()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    first.write(data)
    first.commit()
    t.join(5)
    assert result == {"exists": True, "offset": 0}
    assert store.ingests() == []  # closing an empty ingest leaves nothing behind


def test_different_refs_same_blob(store: ContentStore) -> None:
    data = os.urandom(4096)
    a = store.writer("a", sha(data))
    b = store.writer("b", sha(data))
    a.write(data)
    b.write(data)
    assert a.commit() == b.commit() == sha(data)
    assert len(blob_files(store)) == 1
    assert store.ingests() == []


def test_commit_replaces_damaged_copy_of_same_blob(store: ContentStore) -> None:
    # A blob file cut short on disk (say, by a crash of a filesystem without
    # a journal) is replaced by the next good commit instead of being kept.
    data = os.urandom(10_000)
    d = store.write_blob(data)
    p = store.path(d)
    os.chmod(p, 0o644)
    os.truncate(p, 5000)
    w = store.writer("again", d, len(data))
    assert w.exists
    w.write(data)
    assert w.commit() == d
    assert store.read(d, verify=True) == data
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o444


def test_commit_keeps_existing_whole_blob(store: ContentStore) -> None:
    d = store.write_blob(b"first")
    ino = os.stat(store.path(d)).st_ino
    w = store.writer("second", d)
    w.write(b"first")
    w.commit()
    assert os.stat(store.path(d)).st_ino == ino


# --- reading ------------------------------------------------------------------------


def test_missing_blob(store: ContentStore) -> None:
    d = sha(b"nope")
    assert not store.exists(d)
    for f in (store.info, store.open, store.read, store.path, store.delete):
        with pytest.raises(BlobNotFound) as e:
            f(d)
        assert e.value.digest == d


def test_open_delete_walk(store: ContentStore) -> None:
    ds = {store.write_blob(bytes([i]) * i) for i in range(5)}
    ds.add(store.write_blob(b"big", sha(b"big", "sha512")))
    assert {b.digest for b in store.walk()} == ds
    d = sha(b"\x03" * 3)
    with store.open(d) as f:
        store.delete(d)
        assert f.read() == b"\x03\x03\x03"  # an open reader keeps its blob
    assert not store.exists(d)
    assert d not in {b.digest for b in store.walk()}


def test_read_verify_catches_corruption(store: ContentStore) -> None:
    d = store.write_blob(b"manifest bytes")
    p = store.path(d)
    os.chmod(p, 0o644)
    Path(p).write_bytes(b"manifest bytez")
    assert store.read(d) == b"manifest bytez"
    with pytest.raises(DigestMismatch):
        store.read(d, verify=True)


# --- image_children ----------------------------------------------------------------------


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data)}


def test_image_children() -> None:
    config, layer1, layer2 = b'{"rootfs":{}}', b"layer1", b"layer2"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [
                descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer1),
                descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer2),
            ],
        }
    ).encode()
    assert image_children(sha(manifest), manifest) == [sha(config), sha(layer1), sha(layer2)]
    docker = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": descriptor("application/vnd.docker.container.image.v1+json", config),
            "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer1)],
        }
    ).encode()
    assert image_children(sha(docker), docker) == [sha(config), sha(layer1)]
    for mt in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        None,
    ):
        doc: dict[str, object] = {
            "schemaVersion": 2,
            "manifests": [descriptor("x", manifest), descriptor("x", docker)],
        }
        if mt:
            doc["mediaType"] = mt
        index = json.dumps(doc).encode()
        assert image_children(sha(index), index) == [sha(manifest), sha(docker)]
    # OCI manifests may leave mediaType out.
    bare = json.dumps({"schemaVersion": 2, "config": descriptor("c", config), "layers": []})
    assert image_children("x", bare.encode()) == [sha(config)]
    # Image configs, layers and junk have no children.
    image_config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=b"]}, "rootfs": {}}
    )
    assert image_children("x", image_config.encode()) == []
    assert image_children("x", b"\x1f\x8b\x08gzip") == []
    assert image_children("x", b"{not json") == []
    assert image_children("x", b'{"manifests": 3}') == []


# --- garbage collection ---------------------------------------------------------------------


def make_image(store: ContentStore, name: str) -> dict[str, str]:
    config = store.write_blob(json.dumps({"rootfs": {"diff_ids": [name]}}).encode())
    layer = store.write_blob(f"layer of {name}".encode() * 100)
    shared = store.write_blob(b"shared base layer")
    manifest = store.write_blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": config, "size": 1},
                "layers": [{"digest": shared, "size": 1}, {"digest": layer, "size": 1}],
            }
        ).encode()
    )
    index = store.write_blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"digest": manifest, "size": 1}],
            }
        ).encode()
    )
    return {
        "config": config,
        "layer": layer,
        "shared": shared,
        "manifest": manifest,
        "index": index,
    }


def test_gc_keeps_reachable_removes_rest(store: ContentStore) -> None:
    a = make_image(store, "a")
    b = make_image(store, "b")
    stray = store.write_blob(b"unreferenced")
    removed = store.gc([a["index"]])
    assert set(removed) == {b["index"], b["manifest"], b["config"], b["layer"], stray}
    assert {x.digest for x in store.walk()} == set(a.values())
    assert store.gc([a["index"]]) == []
    assert set(store.gc([])) == set(a.values())
    assert list(store.walk()) == []


def test_gc_dry_run_and_grace(store: ContentStore) -> None:
    d = store.write_blob(b"new")
    assert store.gc([], dry_run=True) == [d]
    assert store.exists(d)
    assert store.gc([], grace=3600) == []
    assert store.exists(d)


def test_gc_custom_children_and_missing_roots(store: ContentStore) -> None:
    leaf = store.write_blob(b"leaf")
    parent = store.write_blob(b"parent")
    missing = sha(b"never stored")

    def children(digest: str, data: bytes) -> list[str]:
        return [leaf, missing, "not a digest"] if data == b"parent" else []

    assert store.gc([parent, missing, "junk"], children) == []
    assert store.exists(leaf)


def test_gc_ingests(store: ContentStore) -> None:
    # Old and abandoned: removed. Old but held by a writer: kept. Recent: kept.
    old = store.writer("old")
    old.write(b"x")
    old.close()
    held = store.writer("held")
    held.write(b"y")
    recent = store.writer("recent")
    recent.write(b"z")
    recent.close()
    past = time.time() - 2 * 86400
    for ref in ("old", "held"):
        d = store._ingest_path(ref)
        for f in os.listdir(d):
            os.utime(os.path.join(d, f), (past, past))
    Path(store.root, "ingest", ".trash-leftover").mkdir()
    Path(store.root, "ingest", "a-file").write_text("not an ingest")
    os.utime(Path(store.root, "ingest", "a-file"), (past, past))
    store.gc([])
    assert Path(store.root, "ingest", "a-file").exists()
    assert sorted(s.ref for s in store.ingests()) == ["held", "recent"]
    assert not Path(store.root, "ingest", ".trash-leftover").exists()
    held.write(b"y")
    assert held.commit() == sha(b"yy")


def test_gc_refused_under_own_lease(store: ContentStore) -> None:
    with store.lease(), pytest.raises(ContentError, match="lease"):
        store.gc([])
    store.gc([])


# --- fsck ----------------------------------------------------------------------------


def test_fsck_clean(store: ContentStore) -> None:
    make_image(store, "a")
    assert store.fsck() == []


def test_fsck_corrupt_missing_size_stray(store: ContentStore) -> None:
    img = make_image(store, "a")
    # Flip one byte of a layer.
    p = store.path(img["layer"])
    os.chmod(p, 0o644)
    raw = bytearray(Path(p).read_bytes())
    raw[7] ^= 0x20
    Path(p).write_bytes(bytes(raw))
    # Lose the config.
    store.delete(img["config"])
    # Junk under blobs/.
    Path(store.root, "blobs", "sha256", "not-a-digest").write_text("x")
    Path(store.root, "blobs", "md5").mkdir()
    os.symlink("/etc/passwd", Path(store.root, "blobs", "sha256", "f" * 64))
    referenced = {img["config"]: 10, img["manifest"]: 1, img["index"]: None}
    problems = store.fsck(referenced)
    by_kind = {(p.kind, p.digest) for p in problems}
    assert ("corrupt", img["layer"]) in by_kind
    assert ("missing", img["config"]) in by_kind
    assert ("size", img["manifest"]) in by_kind
    assert ("stray-file", "blobs/sha256/not-a-digest") in by_kind
    assert ("stray-file", "blobs/md5") in by_kind
    assert ("stray-file", "blobs/sha256/" + "f" * 64) in by_kind  # a symlink is no blob
    assert len(problems) == 6
    assert not store.exists("sha256:" + "f" * 64)
    for f in (store.open, store.info, store.path):
        with pytest.raises(BlobNotFound):
            f("sha256:" + "f" * 64)
    (corrupt,) = [p for p in problems if p.kind == "corrupt"]
    assert "hashes to sha256:" in corrupt.detail and not corrupt.repaired
    assert store.exists(img["layer"])
    # Plain iterables of digests work too.
    assert [p.kind for p in store.fsck([img["config"]]) if p.digest == img["config"]] == ["missing"]


def test_fsck_repair_deletes_corrupt(store: ContentStore) -> None:
    good = store.write_blob(b"good")
    bad = store.write_blob(b"bad blob", sha(b"bad blob", "sha512"))
    p = store.path(bad)
    os.chmod(p, 0o644)
    Path(p).write_bytes(b"bad blob!")
    (problem,) = store.fsck(repair=True)
    assert (problem.kind, problem.digest, problem.repaired) == ("corrupt", bad, True)
    assert not store.exists(bad) and store.exists(good)
    assert store.fsck() == []
    # The next "pull" stores it again.
    assert store.write_blob(b"bad blob", bad) == bad
