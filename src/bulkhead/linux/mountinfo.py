"""Reading ``/proc/<pid>/mountinfo``: what is mounted where, and how.

Each line describes one mount (proc(5))::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)

``mount_id`` and ``parent_id`` (1, 2), the ``root`` of the filesystem that
the mount shows (4: ``/`` unless it is a bind mount of a subdirectory), the
``mountpoint`` (5), the per-mount ``options`` (6), zero or more *optional*
fields (7: propagation, ``shared:N``, ``master:N``, ``unbindable``), a
``-``, then the filesystem type (9), the ``source`` (10) and the
superblock's options (11). Space, tab, newline and backslash in paths are
written as octal escapes (``\\040``): :func:`unescape` undoes them.
"""

from __future__ import annotations

from typing import NamedTuple


class MountInfo(NamedTuple):
    """One line of a mountinfo file."""

    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    options: str
    optional: list[str]
    fstype: str
    source: str
    super_options: str


def unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, ``\\134`` for a backslash)."""
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> MountInfo | None:
    """One line as a :class:`MountInfo`, or None if it is not a well-formed mountinfo line."""
    parts = line.split()
    try:
        sep = parts.index("-", 6)
    except ValueError:
        return None
    if len(parts) < sep + 3:
        return None
    return MountInfo(
        mount_id=int(parts[0]),
        parent_id=int(parts[1]),
        root=unescape(parts[3]),
        mountpoint=unescape(parts[4]),
        options=parts[5],
        optional=parts[6:sep],
        fstype=parts[sep + 1],
        source=unescape(parts[sep + 2]),
        super_options=parts[sep + 3] if len(parts) > sep + 3 else "",
    )


def parse(text: str) -> list[MountInfo]:
    """Every well-formed line of a mountinfo text, in order."""
    out = []
    for line in text.splitlines():
        info = parse_line(line)
        if info is not None:
            out.append(info)
    return out


def read(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    """The mounts of a mountinfo file (the calling process's by default)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())
