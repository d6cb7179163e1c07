"""Pull throughput from a local registry: bulkhead's RegistryClient vs ``skopeo copy``.

A throwaway docker-registry (Debian's package, on 127.0.0.1, storage in the
work directory) gets an image of ``--layers`` gzip layers of ``--layer-mb``
MB of random data each (incompressible: what is timed is transfer, hashing
and writing, not decompression). Then, ``--runs`` times each, in turn:

- ``bulkhead``: ``RegistryClient.pull`` into a fresh ContentStore
  (parallel layer downloads, each verified by digest and size, fsynced);
- ``skopeo``: ``skopeo copy docker://127.0.0.1:<port>/... oci:<fresh dir>``.

Figures are MB/s of blob bytes (1 MB = 10^6 bytes), median and min/max.
Run it on the filesystem you care about with ``--workdir`` (default: a temp
dir under /var/tmp).

    .venv/bin/python bench/pull.py [--layers 4 --layer-mb 50 --runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

sys.path.insert(0, str(benchlib.REPO))

from tests.integration.registry_fixtures import Registry, start_registry, stop_registry
from tests.integration.test_images_registry import build_image

from bulkhead.images.content import ContentStore
from bulkhead.images.registry import RegistryClient


def make_layers(n: int, mb: int) -> list[bytes]:
    # level 1 over random data: gzip framing, no real compression work to speak of.
    return [gzip.compress(os.urandom(mb * 1_000_000), compresslevel=1, mtime=0) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-skopeo", action="store_true")
    ap.add_argument("--out", default=str(benchlib.HERE / "results"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bulkhead-pull-bench-", dir=args.workdir or "/var/tmp"))
    started: list[Registry] = []
    result: dict[str, Any] = {"host": benchlib.host_info(), "args": vars(args)}
    try:
        reg = start_registry(work / "registry", started=started)
        src = ContentStore(work / "src")
        t0 = time.perf_counter()
        layers = make_layers(args.layers, args.layer_mb)
        mdigest, _ = build_image(src, layers)
        total = sum(b.size for b in src.walk())
        ref = reg.ref("bench/big:1")
        t1 = time.perf_counter()
        with RegistryClient(credentials=lambda h: None) as client:
            client.push(ref, src, mdigest)
        t2 = time.perf_counter()
        result["image_bytes"] = total
        result["build_s"] = round(t1 - t0, 3)
        result["push_MBps"] = round(total / (t2 - t1) / 1e6, 1)
        print(f"image: {args.layers} x {args.layer_mb} MB, {total / 1e6:.1f} MB of blobs")
        print(f"push (bulkhead, monolithic): {result['push_MBps']} MB/s")

        skopeo = shutil.which("skopeo")
        times: dict[str, list[float]] = {"bulkhead": [], "skopeo": []}
        for run in range(args.runs):
            dest = work / f"pull-{run}"
            with RegistryClient(credentials=lambda h: None, max_workers=args.workers) as client:
                t = time.perf_counter()
                client.pull(ref, ContentStore(dest))
                times["bulkhead"].append(time.perf_counter() - t)
            shutil.rmtree(dest)
            if skopeo and not args.no_skopeo:
                odir = work / f"oci-{run}"
                t = time.perf_counter()
                subprocess.run(
                    [
                        skopeo,
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        f"docker://{ref}",
                        f"oci:{odir}:big",
                    ],
                    check=True,
                    stdin=subprocess.DEVNULL,
                )
                times["skopeo"].append(time.perf_counter() - t)
                shutil.rmtree(odir)
        for name, samples in times.items():
            if not samples:
                continue
            mbps = sorted(total / s / 1e6 for s in samples)
            result[name] = {
                "seconds": [round(s, 3) for s in samples],
                "MBps_median": round(statistics.median(mbps), 1),
                "MBps_min": round(mbps[0], 1),
                "MBps_max": round(mbps[-1], 1),
            }
            print(
                f"pull {name:9s}: median {result[name]['MBps_median']} MB/s "
                f"(min {mbps[0]:.1f}, max {mbps[-1]:.1f}; {len(samples)} runs)"
            )
        if times["skopeo"]:
            result["skopeo_version"] = benchlib.version_of(Path(skopeo or "skopeo"))
        path = benchlib.save_result(args.out, "pull", result)
        print(f"saved {path}")
    finally:
        for reg in started:
            stop_registry(reg)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
