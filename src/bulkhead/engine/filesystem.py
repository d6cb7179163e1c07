"""A container's files seen from outside: ``docker cp``, ``diff``, ``export`` and ``commit``.

Every function here is synchronous (the engine runs it in a thread) and
works on a container's *mounted* root filesystem (``rootfs``) or its
snapshot; paths given by the user are resolved *inside* the rootfs
(:func:`bulkhead.runtime.securejoin.secure_join`: ``..`` and symlinks never
lead out of it).

*path stat*
    what ``X-Docker-Container-Path-Stat`` carries (base64 JSON): ``name``,
    ``size``, ``mode`` as Go's ``os.FileMode`` bits (not Unix's: a directory
    is bit 31, a symlink bit 27 ...), ``mtime`` (RFC 3339) and
    ``linkTarget``.
*changes*
    ``docker diff``: ``{"Path", "Kind"}`` with Kind 0 modified, 1 added,
    2 deleted, from the snapshot's diff against the image.
*commit*
    a new image: the container's image plus one layer (the snapshot's diff),
    its config the container's (with ``--change`` applied) and a history
    entry.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from typing import Any, BinaryIO

from bulkhead.errors import NoSuchContainer, SpecError

# Go's os.FileMode type bits
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHAR_DEVICE = 1 << 21
_GO_STICKY = 1 << 20


class PathNotFound(NoSuchContainer):
    """A path that does not exist in the container (HTTP 404, Docker's message)."""


def go_file_mode(st_mode: int) -> int:
    """Unix ``st_mode`` -> Go's ``os.FileMode`` (what the docker CLI decodes)."""
    mode = stat.S_IMODE(st_mode) & 0o777
    if stat.S_ISDIR(st_mode):
        mode |= _GO_DIR
    elif stat.S_ISLNK(st_mode):
        mode |= _GO_SYMLINK
    elif stat.S_ISFIFO(st_mode):
        mode |= _GO_NAMED_PIPE
    elif stat.S_ISSOCK(st_mode):
        mode |= _GO_SOCKET
    elif stat.S_ISCHR(st_mode):
        mode |= _GO_DEVICE | _GO_CHAR_DEVICE
    elif stat.S_ISBLK(st_mode):
        mode |= _GO_DEVICE
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def resolve(rootfs: str, path: str, container: str) -> str:
    """The host path of ``path`` inside ``rootfs``: its parent resolved safely, the last
    component kept as it is (a symlink is itself, as Docker's archive endpoints)."""
    from bulkhead.runtime.securejoin import secure_join

    if not path:
        raise SpecError("path must not be empty", where="path")
    clean = os.path.normpath("/" + path)
    parent, base = os.path.split(clean)
    host_parent = secure_join(rootfs, parent)
    host = os.path.join(host_parent, base) if base else host_parent
    if not os.path.lexists(host):
        raise PathNotFound(f"Could not find the file {path} in container {container}")
    return host


def path_stat(rootfs: str, path: str, container: str) -> dict[str, Any]:
    """Docker's ``ContainerPathStat`` of ``path``."""
    host = resolve(rootfs, path, container)
    st = os.lstat(host)
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = os.readlink(host)
    return {
        "name": os.path.basename(os.path.normpath("/" + path)) or "/",
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": _rfc3339(st.st_mtime),
        "linkTarget": link,
    }


def tar_path(rootfs: str, path: str, container: str, out: BinaryIO) -> dict[str, Any]:
    """Write ``path`` (a file, link or whole directory) as a tar to ``out``; return its stat.

    Entries are named from the path's base name (``/etc`` -> ``etc/...``),
    or ``.`` when the path ends in ``/.`` (a directory's contents), as Docker.
    """
    info = path_stat(rootfs, path, container)
    host = resolve(rootfs, path, container)
    arc_root = "." if path.rstrip("/").endswith("/.") or path == "." else info["name"]
    if arc_root == "/":
        arc_root = "."
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        stack = [(host, arc_root)]
        while stack:
            src, arc = stack.pop()
            st = os.lstat(src)
            if stat.S_ISSOCK(st.st_mode):
                continue
            ti = tar.gettarinfo(src, arcname=arc)
            ti.uname = ti.gname = ""
            if ti.isreg():
                fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as data:
                    tar.addfile(ti, data)
            else:
                tar.addfile(ti)
            if stat.S_ISDIR(st.st_mode):
                names = sorted(os.listdir(src), reverse=True)
                stack.extend((os.path.join(src, n), f"{arc}/{n}") for n in names)
    return info


def extract_to(
    rootfs: str,
    path: str,
    container: str,
    source: BinaryIO,
    *,
    no_overwrite_dir_non_dir: bool = False,
) -> None:
    """Unpack the tar read from ``source`` into directory ``path`` of the container.

    Entries may not leave the rootfs (``..``, absolute names and symlinks are
    resolved inside it). With ``no_overwrite_dir_non_dir`` a directory never
    replaces a file nor a file a directory (Docker's 400 otherwise).
    """
    from bulkhead.runtime.securejoin import mkdir_all_in_root, secure_join

    target = resolve(rootfs, path, container)
    if os.path.islink(target):
        target = secure_join(rootfs, os.path.normpath("/" + path))
    if not os.path.isdir(target):
        raise SpecError("extraction point is not a directory", where=None)
    rel_target = os.path.relpath(target, rootfs)
    with tarfile.open(fileobj=source, mode="r|*") as tar:
        for member in tar:
            name = os.path.normpath("/" + member.name).lstrip("/")
            if not name or name == ".":
                continue
            inside = os.path.normpath(os.path.join("/", rel_target, name))
            parent_rel, base = os.path.split(inside)
            parent = mkdir_all_in_root(rootfs, parent_rel, 0o755)
            dest = os.path.join(parent, base)
            exists = os.path.lexists(dest)
            if exists and no_overwrite_dir_non_dir:
                is_dir = os.path.isdir(dest) and not os.path.islink(dest)
                if is_dir and not member.isdir():
                    raise SpecError(
                        f"cannot overwrite directory {inside!r} with non-directory {member.name!r}"
                    )
                if not is_dir and member.isdir():
                    raise SpecError(
                        f"cannot overwrite non-directory {inside!r} with directory {member.name!r}"
                    )
            real_dir = exists and os.path.isdir(dest) and not os.path.islink(dest)
            if member.isdir():
                if exists and not real_dir:
                    os.unlink(dest)  # a file or a symlink: never followed (it may point out)
                if not real_dir:
                    os.mkdir(dest, 0o700)
                os.chmod(dest, member.mode & 0o7777)
            else:
                if real_dir:
                    import shutil

                    shutil.rmtree(dest)
                elif exists:
                    os.unlink(dest)
                if member.isreg():
                    data = tar.extractfile(member)
                    assert data is not None
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        while chunk := data.read(1 << 20):
                            f.write(chunk)
                    os.chmod(dest, member.mode & 0o7777)
                elif member.issym():
                    os.symlink(member.linkname, dest)
                elif member.islnk():
                    link_src = secure_join(
                        rootfs,
                        os.path.join("/", rel_target, os.path.normpath("/" + member.linkname)),
                    )
                    os.link(link_src, dest)
                elif member.isfifo():
                    os.mkfifo(dest, member.mode & 0o7777)
                elif member.ischr() or member.isblk():
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(
                        dest,
                        kind | (member.mode & 0o7777),
                        os.makedev(member.devmajor, member.devminor),
                    )
                else:
                    continue
            with contextlib.suppress(OSError):
                os.lchown(dest, member.uid, member.gid)
            if not member.issym():
                with contextlib.suppress(OSError):
                    os.utime(dest, (member.mtime, member.mtime))


# --- diff, commit ------------------------------------------------------------


def changes(snapshotter: Any, key: str) -> list[dict[str, Any]]:
    """``docker diff``: the snapshot's changes as ``{"Path", "Kind"}`` (0 C, 1 A, 2 D)."""
    from bulkhead.snapshots.diff import OPAQUE_MARKER, WHITEOUT_PREFIX, diff

    dirs = snapshotter.diff_dirs(key)
    lowers: tuple[str, ...] = tuple(dirs.lowers)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryFile() as tmp:
        diff(snapshotter, key, tmp)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                parent, base = os.path.split(name)
                if base == OPAQUE_MARKER:
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    gone = os.path.join(parent, base[len(WHITEOUT_PREFIX) :])
                    out.append({"Path": "/" + gone, "Kind": 2})
                    continue
                existed = any(os.path.lexists(os.path.join(lower, name)) for lower in lowers)
                out.append({"Path": "/" + name, "Kind": 0 if existed else 1})
    # Docker lists the parents of every change as modified too (permissions must survive)
    seen = {c["Path"] for c in out}
    for c in list(out):
        parent = os.path.dirname(c["Path"])
        while parent not in ("/", "") and parent not in seen:
            seen.add(parent)
            out.append({"Path": parent, "Kind": 0})
            parent = os.path.dirname(parent)
    out.sort(key=lambda c: c["Path"])
    return out


def commit_image(
    images: Any,
    snapshotter: Any,
    *,
    key: str,
    image_id: str,
    container_config: dict[str, Any],
    container_id: str,
    created_by: str,
    repo: str | None = None,
    tag: str | None = None,
    comment: str = "",
    author: str = "",
    changes_: Iterable[str] = (),
    config_override: dict[str, Any] | None = None,
) -> str:
    """``docker commit``: the container's image plus its changes as a new image; its id."""
    from bulkhead.images.archive import apply_changes
    from bulkhead.images.busybox import canonical_json
    from bulkhead.oci.image_spec import (
        MEDIA_TYPE_OCI_CONFIG,
        MEDIA_TYPE_OCI_LAYER,
        MEDIA_TYPE_OCI_MANIFEST,
    )
    from bulkhead.snapshots.diff import diff

    parent = images.get(image_id)
    cfg = {
        k: v
        for k, v in container_config.items()
        if k not in ("Hostname", "Domainname", "Image", "AttachStdin", "AttachStdout",
                     "AttachStderr", "Tty", "OpenStdin", "StdinOnce")
    }  # fmt: skip
    if config_override:
        cfg.update({k: v for k, v in config_override.items() if v is not None})
    cfg = apply_changes(cfg, changes_)
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    lease = getattr(images.content, "lease", None)
    with (
        lease() if lease is not None else contextlib.nullcontext(),
        tempfile.TemporaryFile() as tmp,
    ):
        layer = diff(snapshotter, key, tmp)
        tmp.seek(0)
        digest = str(images.content.ingest_from(tmp))
        new_config = json.loads(json.dumps(parent.config))
        new_config["created"] = now
        new_config["config"] = cfg
        new_config["container"] = container_id
        if author:
            new_config["author"] = author
        if comment:
            new_config["comment"] = comment
        new_config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        new_config["rootfs"]["diff_ids"] = [*parent.diff_ids, layer.diff_id]
        entry: dict[str, Any] = {"created": now, "created_by": created_by}
        if author:
            entry["author"] = author
        if comment:
            entry["comment"] = comment
        new_config["history"] = [*(new_config.get("history") or []), entry]
        config_bytes = canonical_json(new_config)
        config_digest = images.content.write_blob(config_bytes)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_TYPE_OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": [
                    *parent.layers,
                    {"mediaType": MEDIA_TYPE_OCI_LAYER, "digest": digest, "size": layer.size},
                ],
            }
        )
        image = images.add(images.content.write_blob(manifest))
        if repo:
            images.tag(image, f"{repo}:{tag or 'latest'}")
    return str(image.id)
