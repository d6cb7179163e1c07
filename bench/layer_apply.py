"""Layer apply speed: bulkhead vs GNU tar, umoci and ``podman import`` on the same two tars.

(a) a tar of large files (default 4 x 256 MiB of random data) and (b) a tar of
50,000 small files (1-8 KiB, 100 per directory), each extracted into a fresh
directory of a fresh filesystem: a journaled ext4 on a sparse loop image
under /var/tmp (default; MACHINE-NOTES explains why not /) or a tmpfs
(``--fs tmpfs``). Tools alternate run by run; every run starts after a
``sync`` so no tool pays for another's writeback. Times are wall clock of
the whole command (bulkhead: a fresh interpreter that imports the module
and applies the layer, as a pull would). Everything is removed at the end,
also on failure or Ctrl-C.

    sudo .venv/bin/python bench/layer_apply.py [--runs 5] [--fs ext4|tmpfs]
        [--tools bulkhead,tar,umoci,podman] [--large-mib 256 --large-count 4]
        [--small-count 50000] [--out bench/results]

umoci: ``umoci raw unpack`` of an OCI layout whose only layer is the tar
(uncompressed media type, blob hard-linked, not copied). podman: ``podman
import`` into a storage root of its own (``--root``/``--runroot``), overlay
driver, one fresh root per run. Needs root (loop mount, owners).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib

PYTHON = str(benchlib.PYTHON)


def sh(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), check=True, capture_output=True, **kw)


def make_large(path: Path, count: int, mib: int) -> int:
    total = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(count):
            ti = tarfile.TarInfo(f"data/big{i}.bin")
            ti.size = mib << 20
            ti.mode = 0o644
            ti.mtime = int(time.time())
            tf.addfile(ti, _RandomFile(ti.size))
            total += ti.size
    return total


class _RandomFile:
    """``size`` bytes that do not compress: 1 MiB of urandom, each pass shifted."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(1 << 20)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = bytearray()
        while len(out) < n:
            take = min(n - len(out), len(self.block) - self.pos)
            out += self.block[self.pos : self.pos + take]
            self.pos += take
            if self.pos == len(self.block):
                self.block = self.block[1:] + self.block[:1]
                self.pos = 0
        self.left -= n
        return bytes(out)


def make_small(path: Path, count: int) -> int:
    rnd = random.Random(4)
    pool = os.urandom(1 << 20)
    total = 0
    now = int(time.time())
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(0, count, 100):
            ti = tarfile.TarInfo(f"tree/d{d // 100:04d}")
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = now
            tf.addfile(ti)
            for i in range(min(100, count - d)):
                size = rnd.randint(1024, 8192)
                off = rnd.randint(0, len(pool) - size)
                fi = tarfile.TarInfo(f"tree/d{d // 100:04d}/f{i:03d}")
                fi.size = size
                fi.mode = 0o644
                fi.mtime = now
                tf.addfile(fi, _Bytes(pool[off : off + size]))
                total += size
    return total


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out


def oci_layout(layout: Path, layer: Path) -> None:
    """A one-layer OCI image layout whose layer blob is ``layer`` (hard-linked)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    ldigest = h.hexdigest()
    os.link(layer, blobs / ldigest)

    def put(obj: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(obj).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return digest, len(data)

    cdigest, csize = put(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{ldigest}"]},
        }
    )
    mdigest, msize = put(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{cdigest}",
                "size": csize,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{ldigest}",
                    "size": layer.stat().st_size,
                }
            ],
        }
    )
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": f"sha256:{mdigest}",
                        "size": msize,
                        "annotations": {"org.opencontainers.image.ref.name": "bench"},
                    }
                ],
            }
        )
    )


def mounts_under(path: Path) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == str(path) or mnt.startswith(str(path) + "/"):
                out.append(mnt)
    return out


def unmount_under(path: Path) -> None:
    for mnt in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)


def tool_commands(
    work: Path, tars: dict[str, Path], runroot: Path
) -> dict[str, Callable[[str, Path], list[str]]]:
    def bulkhead(kind: str, dest: Path) -> list[str]:
        code = (
            "import sys; from bulkhead.images.layer import apply_layer;"
            "apply_layer(sys.argv[1], sys.argv[2])"
        )
        return [PYTHON, "-c", code, str(tars[kind]), str(dest)]

    def tar(kind: str, dest: Path) -> list[str]:
        return ["tar", "-xf", str(tars[kind]), "-C", str(dest)]

    def umoci(kind: str, dest: Path) -> list[str]:
        return [
            "umoci",
            "raw",
            "unpack",
            "--image",
            f"{work / ('layout-' + kind)}:bench",
            str(dest / "rootfs"),
        ]

    def podman(kind: str, dest: Path) -> list[str]:
        return [
            "podman",
            "--root",
            str(dest / "root"),
            "--runroot",
            str(runroot / dest.name),  # podman wants it under 50 characters
            "--storage-driver",
            "overlay",
            "import",
            "--quiet",
            str(tars[kind]),
            f"bench-{kind}",
        ]

    return {"bulkhead": bulkhead, "tar": tar, "umoci": umoci, "podman": podman}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fs", choices=["ext4", "tmpfs"], default="ext4")
    ap.add_argument("--tools", default="bulkhead,tar,umoci,podman")
    ap.add_argument("--large-count", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--small-count", type=int, default=50_000)
    ap.add_argument("--out", default=str(benchlib.HERE / "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("layer_apply.py needs root (loop mount, file owners)")
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t != "bulkhead" and shutil.which(t) is None:
            sys.exit(f"{t} is not installed (apt-get install {t})")

    top = Path(tempfile.mkdtemp(prefix="bulkhead-layer-bench-", dir="/var/tmp"))
    mnt = top / "mnt"
    mnt.mkdir()
    runroot = Path(tempfile.mkdtemp(prefix="bhp", dir="/tmp"))
    mounted = False
    try:
        size_gib = 2 + 3 * (args.large_count * args.large_mib) // 1024 + 2
        if args.fs == "ext4":
            img = top / "fs.img"
            with open(img, "wb") as f:
                f.truncate(size_gib << 30)
            sh("mkfs.ext4", "-q", "-F", "-j", str(img))
            sh("mount", "-o", "loop", str(img), str(mnt))
        else:
            sh("mount", "-t", "tmpfs", "-o", f"size={size_gib}g", "tmpfs", str(mnt))
        mounted = True
        work = mnt / "work"
        work.mkdir()
        tars = {"large": work / "large.tar", "small": work / "small.tar"}
        print(f"making the tars on {args.fs} ...", flush=True)
        payload = {
            "large": make_large(tars["large"], args.large_count, args.large_mib),
            "small": make_small(tars["small"], args.small_count),
        }
        files = {"large": args.large_count, "small": args.small_count}
        if "umoci" in tools:
            for kind, tar in tars.items():
                oci_layout(work / f"layout-{kind}", tar)
        cmds = tool_commands(work, tars, runroot)
        times: dict[str, dict[str, list[float]]] = {k: {t: [] for t in tools} for k in tars}
        n = 0
        for run in range(args.runs):
            for kind in tars:
                for tool in tools:
                    n += 1
                    dest = mnt / f"dest{n}"
                    dest.mkdir()
                    argv = cmds[tool](kind, dest)
                    os.sync()
                    t0 = time.perf_counter()
                    proc = subprocess.run(argv, capture_output=True)
                    elapsed = time.perf_counter() - t0
                    if proc.returncode != 0:
                        raise SystemExit(
                            f"{tool} failed on {kind}: {proc.stderr.decode(errors='replace')[-400:]}"
                        )
                    times[kind][tool].append(elapsed)
                    unmount_under(dest)
                    unmount_under(runroot)
                    shutil.rmtree(dest)
                    shutil.rmtree(runroot / dest.name, ignore_errors=True)
                    os.sync()
            print(f"run {run + 1}/{args.runs} done", flush=True)

        result: dict[str, Any] = {
            "fs": args.fs,
            "host": benchlib.host_info(),
            "runs": args.runs,
            "large": {"files": files["large"], "bytes": payload["large"]},
            "small": {"files": files["small"], "bytes": payload["small"]},
            "times_s": times,
        }
        print(
            f"\nlayer apply on a fresh {args.fs} ({'journaled, loop' if args.fs == 'ext4' else 'RAM'}),"
            f" {args.runs} alternating runs, medians:"
        )
        for kind in tars:
            base = statistics.median(times[kind]["tar"]) if "tar" in tools else None
            print(f"  {kind}: {files[kind]} files, {payload[kind] / 1e6:.0f} MB")
            for tool in tools:
                med = statistics.median(times[kind][tool])
                mbs = payload[kind] / med / 1e6
                fps = files[kind] / med
                ratio = f"  {base / med:5.2f}x GNU tar's speed" if base else ""
                print(
                    f"    {tool:9s} {med:7.3f} s  {mbs:8.0f} MB/s  {fps:9.0f} files/s"
                    f"  (min {min(times[kind][tool]):.3f}, max {max(times[kind][tool]):.3f}){ratio}"
                )
                result.setdefault("summary", {}).setdefault(kind, {})[tool] = {
                    "median_s": med,
                    "MB_per_s": mbs,
                    "files_per_s": fps,
                }
        path = benchlib.save_result(args.out, f"layer_apply-{args.fs}", result)
        print(f"\nsaved {path}")
        return 0
    finally:
        unmount_under(mnt / "work")
        for d in mnt.glob("dest*") if mounted else []:
            unmount_under(d)
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
            if mounts_under(mnt):
                subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        unmount_under(runroot)
        shutil.rmtree(runroot, ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
