"""Resolving paths inside a container's root filesystem without leaving it.

Vocabulary
----------
*scoped resolution*
    Looking a path up *as if* a directory (the container's rootfs) were
    ``/``: an absolute symlink target starts again at that directory, and
    ``..`` at that directory stays there, exactly as the kernel treats paths
    after ``chroot``. A container image is untrusted input: without scoped
    resolution a symlink ``/etc -> /host/etc`` or a destination
    ``/../../etc`` would let a mount land on the host.
*lexical*
    Handled on the string, without asking the filesystem: a missing
    component is taken as a plain directory name, and a ``..`` after it
    removes it again.

:func:`secure_join` is the algorithm of Go's ``filepath-securejoin``
(``SecureJoin``) that runc uses for mount destinations: it walks
``unsafe_path`` one component at a time, expands each symlink it meets into
the part still to walk (at most 255 of them, then ``ELOOP``), and returns a
path that is always ``root`` or below it.

The path it returns is only as good as the moment it was computed: another
process could swap a directory for a symlink right after. :func:`open_in_root`
closes that gap for the one step that matters (the mount): it walks the
resolved path from an fd of ``root`` with ``O_NOFOLLOW`` on every component,
creating missing ones if asked, and returns an ``O_PATH`` fd of the result,
which cannot be anywhere but inside ``root``. Mounting onto
``/proc/self/fd/<fd>`` then mounts onto exactly that inode.

Where the kernel has openat2(2) (Linux >= 5.6), :func:`open_in_root` first
asks it for the whole path in one call with ``RESOLVE_IN_ROOT`` (the same
scoping, done atomically by the kernel) and ``RESOLVE_NO_SYMLINKS``: when no
symlink is on the way, the resolved path is the lexical one and no other
call is needed. Whatever that fast path cannot answer exactly as the walk
would (a symlink, a missing component other than a plain last name to
create, any error) goes the walk's way instead, so results and errors are
the walk's.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Literal

from bulkhead.linux import libc

#: how many symlinks one resolution may expand before giving up (Linux's own limit is 40)
MAX_SYMLINKS = 255

_O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

_PROC_SELF_FD = "/proc/self/fd/"
_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_SYMLINKS
#: cleared when the kernel (or a seccomp filter) says openat2 does not exist
_openat2_ok = True


def secure_join(root: str, unsafe_path: str) -> str:
    """``unsafe_path`` resolved inside ``root`` as if ``root`` were ``/``.

    Symlinks are followed (an absolute target restarts at ``root``), ``..``
    never climbs above ``root``, missing components are kept as they are.
    The result is ``root`` itself or a path below it, without symlinks in the
    part that exists. Raises :class:`OSError` (``ELOOP``) after
    :data:`MAX_SYMLINKS` expansions, and any error of lstat(2) other than
    "does not exist" / "not a directory".
    """
    root = os.path.normpath(root)
    prefix = root.rstrip("/")
    done: list[str] = []
    rest = unsafe_path
    expansions = 0
    while rest:
        name, _, rest = rest.partition("/")
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        full = prefix + "/" + "/".join([*done, name])
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            done.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(name)
            continue
        expansions += 1
        if expansions > MAX_SYMLINKS:
            raise OSError(
                errno.ELOOP,
                "secure_join: too many symlinks",
                prefix + "/" + unsafe_path.lstrip("/"),
            )
        target = os.readlink(full)
        if target.startswith("/"):
            done.clear()
        rest = target + "/" + rest
    if not done:
        return root
    return prefix + "/" + "/".join(done)


def open_in_root(
    root: str,
    unsafe_path: str,
    *,
    create: Literal["dir", "file"] | None = None,
    mode: int = 0o755,
) -> tuple[int, str]:
    """An ``O_PATH`` fd of ``unsafe_path`` inside ``root``, and the resolved path.

    The path is resolved with :func:`secure_join`, then walked from an fd of
    ``root`` with ``O_NOFOLLOW``, so a component swapped for a symlink in the
    meantime makes the call fail (``ENOTDIR``/``ELOOP``) instead of escaping.
    With ``create`` the missing directories on the way are made (``mode``)
    and a missing last component becomes a directory (``"dir"``) or an empty
    file (``"file"``). The caller closes the fd.
    """
    if _openat2_ok:
        fast = _open_in_root_openat2(root, unsafe_path, create, mode)
        if fast is not None:
            return fast
    return _open_in_root_walk(root, unsafe_path, create=create, mode=mode)


def _lexical(root: str, path: str) -> str:
    """What :func:`secure_join` returns for ``path`` when no component is a symlink."""
    done: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        done.append(name)
    root = os.path.normpath(root)
    if not done:
        return root
    return root.rstrip("/") + "/" + "/".join(done)


def _open_in_root_openat2(
    root: str, unsafe_path: str, create: Literal["dir", "file"] | None, mode: int
) -> tuple[int, str] | None:
    """:func:`open_in_root` by openat2(2), or None when the walk must answer.

    ``RESOLVE_IN_ROOT`` scopes the lookup to ``root`` as :func:`secure_join`
    does; ``RESOLVE_NO_SYMLINKS`` makes any symlink on the way an error (the
    walk then expands it), so on success every component exists and is no
    symlink, and the resolved path is the lexical one.
    """
    global _openat2_ok
    if "\0" in unsafe_path or "\0" in root or not unsafe_path.strip("/"):
        return None
    want_dir = os.O_DIRECTORY if create == "dir" else 0
    own = _own_fd(root)
    if own is not None:
        # root names our fd (how the runtime names the rootfs): use it as it is
        # rather than open the magic link again (openat2 refuses a non-directory)
        root_fd = own
    else:
        try:
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
    try:
        try:
            fd = libc.openat2(root_fd, unsafe_path, os.O_PATH | os.O_CLOEXEC | want_dir, _RESOLVE)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM):
                _openat2_ok = False
                return None
            if exc.errno != errno.ENOENT or create is None:
                return None
        else:
            return fd, _lexical(root, unsafe_path)
        # A missing last component to create: resolve its parent, make it there.
        parent, _, name = unsafe_path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            return None
        try:
            parent_fd = libc.openat2(
                root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, _RESOLVE
            )
        except OSError:
            return None
        try:
            try:
                _create_new(parent_fd, name, directory=create == "dir", mode=mode)
            except FileExistsError:
                return None  # e.g. a dangling symlink: the walk expands it
            fd = os.open(name, _O_PATH_NOFOLLOW | want_dir, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        resolved = _lexical(root, parent).rstrip("/") + "/" + name
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, "a symlink appeared during resolution", resolved)
        except BaseException:
            os.close(fd)
            raise
        return fd, resolved
    finally:
        if own is None:
            os.close(root_fd)


def _own_fd(root: str) -> int | None:
    """N when ``root`` is ``/proc/self/fd/N``, else None."""
    if not root.startswith(_PROC_SELF_FD):
        return None
    digits = root[len(_PROC_SELF_FD) :]
    if not digits.isdigit() or not digits.isascii() or (digits[0] == "0" and digits != "0"):
        return None
    return int(digits)


def _open_in_root_walk(
    root: str,
    unsafe_path: str,
    *,
    create: Literal["dir", "file"] | None = None,
    mode: int = 0o755,
) -> tuple[int, str]:
    """:func:`open_in_root` by :func:`secure_join` and an ``O_NOFOLLOW`` walk."""
    resolved = secure_join(root, unsafe_path)
    rel = os.path.relpath(resolved, os.path.normpath(root))
    names = [] if rel == "." else rel.split("/")
    # root itself is trusted (and may be a /proc/self/fd/N magic link): follow it
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            flags = (
                _O_PATH_NOFOLLOW if last and create != "dir" else _O_PATH_NOFOLLOW | os.O_DIRECTORY
            )
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise FileNotFoundError(
                        errno.ENOENT, os.strerror(errno.ENOENT), resolved
                    ) from None
                _create(fd, name, directory=not last or create == "dir", mode=mode)
                child = os.open(name, flags, dir_fd=fd)
            except NotADirectoryError:
                partial = os.path.join(os.path.normpath(root), *names[: i + 1])
                raise NotADirectoryError(
                    errno.ENOTDIR, "not a directory (or a symlink appeared)", partial
                ) from None
            os.close(fd)
            fd = child
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "a symlink appeared during resolution", resolved)
    except BaseException:
        os.close(fd)
        raise
    return fd, resolved


def _create(dir_fd: int, name: str, *, directory: bool, mode: int) -> None:
    try:
        _create_new(dir_fd, name, directory=directory, mode=mode)
    except FileExistsError:
        pass  # made by someone else meanwhile; the O_NOFOLLOW open that follows checks it


def _create_new(dir_fd: int, name: str, *, directory: bool, mode: int) -> None:
    """Make ``name`` in ``dir_fd``; :class:`FileExistsError` if anything is there."""
    if directory:
        os.mkdir(name, mode, dir_fd=dir_fd)
    else:
        os.close(
            os.open(
                name,
                os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode,
                dir_fd=dir_fd,
            )
        )


def create_in_root(root: str, unsafe_path: str, *, directory: bool, mode: int = 0o755) -> str:
    """Make ``unsafe_path`` exist inside ``root`` (a directory, or an empty file) and return it.

    Missing parent directories are created too; an existing path of any type
    is left as it is. This is how a mount destination is prepared: a
    directory for a directory source, a file for a file source.
    """
    fd, resolved = open_in_root(root, unsafe_path, create="dir" if directory else "file", mode=mode)
    os.close(fd)
    return resolved


def mkdir_all_in_root(root: str, unsafe_path: str, mode: int = 0o755) -> str:
    """``mkdir -p`` of ``unsafe_path`` inside ``root``; returns the resolved path."""
    return create_in_root(root, unsafe_path, directory=True, mode=mode)
