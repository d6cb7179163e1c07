"""The content store across processes: SIGKILLed writers, concurrent writers, gc vs leases.

(tests/unit/test_images_content.py has the single-process tests.)

Also measures ingest throughput on tmpfs (printed; run with ``-s`` to see it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.errors import ContentError
from bulkhead.images.content import ContentStore

CHILD_PRELUDE = """
import os, sys, time
from bulkhead.images.content import ContentStore
store = ContentStore(sys.argv[1])
"""


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Children started by a test; killed and reaped whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(store: ContentStore) -> list[Path]:
    return sorted(p for p in Path(store.root, "blobs").rglob("*") if p.is_file())


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigkilled_writer_leaves_no_blob_and_resumes(
    store: ContentStore, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    data = os.urandom(8 << 20)
    src = tmp_path / "src"
    src.write_bytes(data)
    digest = sha(data)
    # The child writes 64 KiB at a time, slowly, and is killed half-way.
    child = spawn(
        """
        data = open(sys.argv[2], "rb").read()
        w = store.writer("pull-layer", sys.argv[3], len(data))
        print("opened", flush=True)
        for i in range(0, len(data), 65536):
            w.write(data[i:i + 65536])
            time.sleep(0.002)
        w.commit()
        """,
        store.root,
        str(src),
        digest,
    )
    procs.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "opened"
    wait_for(lambda: any(s.offset > (1 << 20) for s in store.ingests()))
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    assert blob_files(store) == []
    assert not store.exists(digest)
    (status,) = store.ingests()
    assert status.ref == "pull-layer" and status.total == len(data)
    assert 0 < status.offset < len(data)

    # The kernel released the dead writer's lock: resume at once, from its offset.
    w = store.writer("pull-layer", digest, len(data), timeout=0)
    assert w.offset == status.offset
    w.write(data[w.offset :])
    assert w.commit() == digest
    assert store.read(digest) == data
    assert store.ingests() == [] and store.fsck() == []


def test_sigkilled_ingest_from_then_ingest_from_again(
    store: ContentStore, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    # A stream that stalls after some bytes stands for a registry connection.
    data = os.urandom(16 << 20)
    src = tmp_path / "src"
    src.write_bytes(data)
    digest = sha(data)
    child = spawn(
        """
        class Slow:
            def __init__(self, f):
                self.f = f
            def readinto(self, b):
                if self.f.tell() >= 5 << 20:
                    time.sleep(3600)
                return self.f.readinto(b)
        with open(sys.argv[2], "rb") as f:
            store.ingest_from(Slow(f), sys.argv[3], os.path.getsize(sys.argv[2]))
        """,
        store.root,
        str(src),
        digest,
    )
    procs.append(child)
    wait_for(lambda: any(s.offset >= (5 << 20) for s in store.ingests()))
    child.kill()
    child.wait()
    assert blob_files(store) == []
    with open(src, "rb") as f:
        assert store.ingest_from(f, digest, len(data)) == digest
    assert store.read(digest) == data and store.ingests() == []


@pytest.mark.parametrize("same_ref", [False, True], ids=["refs-differ", "same-ref"])
def test_concurrent_writers_of_one_blob(
    store: ContentStore, tmp_path: Path, procs: list[subprocess.Popen[str]], same_ref: bool
) -> None:
    n = 8
    data = os.urandom(4 << 20)
    src = tmp_path / "src"
    src.write_bytes(data)
    digest = sha(data)
    go = tmp_path / "go"
    for i in range(n):
        procs.append(
            spawn(
                """
                data = open(sys.argv[2], "rb").read()
                while not os.path.exists(sys.argv[4]):
                    time.sleep(0.001)
                w = store.writer(sys.argv[5], sys.argv[3], len(data))
                for i in range(0, len(data), 1 << 18):
                    w.write(data[i:i + (1 << 18)])
                print(w.commit())
                """,
                store.root,
                str(src),
                digest,
                str(go),
                "same" if same_ref else f"ref-{i}",
            )
        )
    time.sleep(0.3)  # let them all start and wait
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == digest
    assert blob_files(store) == [Path(store.path(digest))]
    assert store.read(digest) == data
    assert store.ingests() == []
    assert [p for p in os.listdir(Path(store.root, "ingest"))] == []


def test_gc_waits_for_another_process_lease(
    store: ContentStore, procs: list[subprocess.Popen[str]]
) -> None:
    # A pull in another process: writes a blob under a lease, records it a bit later.
    child = spawn(
        """
        with store.lease():
            d = store.write_blob(b"layer being pulled")
            print(d, flush=True)
            time.sleep(0.5)
            open(os.path.join(sys.argv[1], "recorded"), "w").write(d)
        """,
        store.root,
    )
    procs.append(child)
    assert child.stdout is not None
    digest = child.stdout.readline().strip()
    assert store.exists(digest)
    # While the lease is held, gc waits (here: times out) and the blob stays.
    with pytest.raises(ContentError, match="timed out"):
        store.gc([], timeout=0.1)
    assert store.exists(digest)
    # A gc that waits runs once the lease ends, when the image is recorded as a root.
    recorded = Path(store.root, "recorded")
    assert store.gc([digest]) == []  # blocks until the lease ends
    assert recorded.read_text() == digest  # written just before: gc did wait
    assert store.exists(digest)
    child.wait(10)


def test_gc_keeps_ingest_held_by_another_process(
    store: ContentStore, procs: list[subprocess.Popen[str]]
) -> None:
    child = spawn(
        """
        w = store.writer("in-progress")
        w.write(b"half")
        print("writing", flush=True)
        time.sleep(3600)
        """,
        store.root,
    )
    procs.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    assert store.gc([], ingest_max_age=0) == []
    assert [s.ref for s in store.ingests()] == ["in-progress"]
    child.kill()
    child.wait()
    # Its writer is gone: now the abandoned ingest goes.
    store.gc([], ingest_max_age=0)
    assert store.ingests() == []


@pytest.mark.slow
def test_ingest_throughput_tmpfs(capsys: pytest.CaptureFixture[str]) -> None:
    """A 1 GiB blob from a tmpfs file into a store on tmpfs: best of 3 (printed)."""
    if not os.path.isdir("/dev/shm") or shutil.disk_usage("/dev/shm").free < (3 << 30):
        pytest.skip("needs 3 GiB free on /dev/shm")
    size = 1 << 30
    base = tempfile.mkdtemp(prefix="bulkhead-content-", dir="/dev/shm")
    try:
        src = os.path.join(base, "src")
        chunk = os.urandom(64 << 20)
        h = hashlib.sha256()
        with open(src, "wb") as f:
            for _ in range(size // len(chunk)):
                f.write(chunk)
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        store = ContentStore(os.path.join(base, "content"))
        rates = []
        for _ in range(3):
            if store.exists(digest):
                store.delete(digest)
            t = time.perf_counter()
            with open(src, "rb", buffering=0) as f:
                assert store.ingest_from(f, digest, size) == digest
            rates.append(size / (time.perf_counter() - t) / 1e6)
        t = time.perf_counter()
        assert store.fsck() == []
        fsck_rate = size / (time.perf_counter() - t) / 1e6
        with capsys.disabled():
            print(
                f"\ncontent store ingest, 1 GiB on tmpfs: best {max(rates):.0f} MB/s"
                f" (runs: {', '.join(f'{r:.0f}' for r in rates)}); fsck {fsck_rate:.0f} MB/s"
            )
        # A floor well below the target that still catches a per-byte Python loop.
        assert max(rates) > 100
    finally:
        shutil.rmtree(base, ignore_errors=True)
