"""``docker cp`` done from inside the container's root: a helper process chrooted there.

The daemon resolves a path in a container's root filesystem safely
(:func:`bulkhead.runtime.securejoin.secure_join`), but a container that is
*running* can change its files between that resolution and the open, mkdir
or link that follows: swap a directory for a symlink to ``/`` and a copy
into the container writes the host's files, a copy out of it reads them
(CVE-2018-15664, Docker's ``docker cp`` race). So the archive endpoints do
their file work in a short-lived helper process that ``chroot``\\ s into the
container's view first: inside it, every path, every symlink and every
``..`` resolves within the container, whatever the container does
meanwhile.

A chrooted process must take nothing from the container's files: Python
imports nothing after the ``chroot`` (everything is imported first and
``sys.path`` is emptied: an import would otherwise load the container's
Python files as root), and ``tarfile`` does no user/group name lookups
(glibc's NSS would load the container's ``libnss_*.so``, Docker's
CVE-2019-14271).

Protocol: ``python -m bulkhead.engine.chrooted OP VIEW PATH CONTAINER
[--no-overwrite-dir-non-dir]`` with OP ``stat`` (nothing in or out),
``get`` (the tar on stdout) or ``put`` (the tar on stdin). The last line
on stderr is the result as JSON: ``{"stat": {...}}`` (stat, get),
``{"ok": true}`` (put) or ``{"error": message, "kind": "not_found" |
"bad_request" | "io"}``; the exit code is 0 on success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO, Any

from bulkhead.errors import ContainerError, SpecError

#: The result's error kinds, and what they become in the daemon.
_NOT_FOUND = "not_found"
_BAD_REQUEST = "bad_request"


class ChrootedError(ContainerError):
    """The helper could not do the copy (an I/O error inside the container, ...): HTTP 500."""


def run(
    op: str,
    view: str,
    path: str,
    container: str,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    no_overwrite_dir_non_dir: bool = False,
) -> dict[str, Any]:
    """Run ``op`` chrooted into ``view``; the path stat (``stat``/``get``) or ``{}`` (``put``).

    Raises :class:`~bulkhead.engine.filesystem.PathNotFound` (404) or
    :class:`~bulkhead.errors.SpecError` (400) as the unchrooted functions
    of :mod:`bulkhead.engine.filesystem` do. Blocking: call it in a thread.
    """
    argv = [sys.executable, "-m", "bulkhead.engine.chrooted", op, view, path, container]
    if no_overwrite_dir_non_dir:
        argv.append("--no-overwrite-dir-non-dir")
    proc = subprocess.run(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
        check=False,
    )
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if not isinstance(result, dict):
        result = {}
    if proc.returncode == 0 and "error" not in result:
        return dict(result.get("stat") or {})
    message = str(result.get("error") or "\n".join(lines[-5:]) or f"exit {proc.returncode}")
    kind = result.get("kind")
    if kind == _NOT_FOUND:
        from bulkhead.engine.filesystem import PathNotFound

        raise PathNotFound(message)
    if kind == _BAD_REQUEST:
        raise SpecError(message)
    raise ChrootedError(f"copy in container {container}: {message}")


def _confine(view: str) -> None:
    """Import what the work needs, shut the import system off, then chroot into ``view``."""
    import bz2  # noqa: F401 - tarfile's "r|*" opens compressed streams with these
    import datetime
    import gzip  # noqa: F401
    import lzma  # noqa: F401
    import shutil  # noqa: F401
    import stat  # noqa: F401
    import tarfile
    import zlib  # noqa: F401

    import bulkhead.engine.filesystem
    import bulkhead.runtime.securejoin  # noqa: F401

    # No user or group names: NSS would dlopen the container's libraries.
    tarfile.pwd = None  # type: ignore[attr-defined]
    tarfile.grp = None  # type: ignore[attr-defined]
    datetime.datetime.fromtimestamp(0, datetime.UTC).isoformat()  # any lazy set-up: now
    os.chdir(view)
    os.chroot(".")
    os.chdir("/")
    sys.path[:] = []
    sys.path_importer_cache.clear()
    sys.path_hooks[:] = []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flags = {a for a in args if a.startswith("--")}
    pos = [a for a in args if not a.startswith("--")]
    if (
        len(pos) != 4
        or pos[0] not in ("stat", "get", "put")
        or flags - {"--no-overwrite-dir-non-dir"}
    ):
        print(json.dumps({"error": "usage: OP VIEW PATH CONTAINER", "kind": "io"}), file=sys.stderr)
        return 2
    op, view, path, container = pos
    from bulkhead.engine import filesystem

    try:
        _confine(view)
        result: dict[str, Any] = {"ok": True}
        if op == "stat":
            result = {"stat": filesystem.path_stat("/", path, container)}
        elif op == "get":
            out = sys.stdout.buffer
            result = {"stat": filesystem.tar_path("/", path, container, out)}
            out.flush()
        else:
            filesystem.extract_to(
                "/",
                path,
                container,
                sys.stdin.buffer,
                no_overwrite_dir_non_dir="--no-overwrite-dir-non-dir" in flags,
            )
    except filesystem.PathNotFound as exc:
        result = {"error": str(exc), "kind": _NOT_FOUND}
    except SpecError as exc:
        result = {"error": str(exc), "kind": _BAD_REQUEST}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "kind": "io"}
    print(json.dumps(result), file=sys.stderr)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
