"""The conversation between the runtime and the container's init.

The runtime (parent) and the processes it forks talk over one
``SOCK_SEQPACKET`` socket pair: each message is one datagram, a *kind* and
zero or more text fields separated by NUL bytes. The child side keeps this
to plain ``send``/``recv`` calls, nothing else.

Messages from the child:

``idmap``              my new user namespace needs its uid/gid maps: write them
``pid <n>``            (stage 1) the container's init was born with host pid n
``hooks``              my mounts are done: run prestart and createRuntime hooks
``seccomp-listener``   (with the listener fd attached) hand it to listenerPath
``ready``              set up, waiting to be started (or, for exec, about to exec)
``error <step> <errno> <message>``   step failed; I exit

Messages from the parent:

``placed``             you are in the container's cgroup
``go``                 continue (the maps are written, the hooks ran, the listener went out)
``abort <message>``    stop; something failed on the runtime's side
"""

from __future__ import annotations

import os
import socket

from bulkhead.errors import ExecutableNotFound, ExecutableNotRunnable, StartError

MAX_MESSAGE = 65536


def channel() -> tuple[socket.socket, socket.socket]:
    """A (parent, child) pair of connected SEQPACKET sockets, close-on-exec."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return parent, child


def send(sock: socket.socket, kind: str, *fields: str | int) -> None:
    parts = [kind.encode(), *(str(f).encode("utf-8", "surrogateescape") for f in fields)]
    sock.send(b"\0".join(parts))


def recv(sock: socket.socket) -> tuple[str, list[str]]:
    """The next message as (kind, fields); ``("eof", [])`` when the other side is gone."""
    kind, fields, fds = recv_with_fds(sock)
    close_quietly(*fds)
    return kind, fields


def recv_with_fds(sock: socket.socket) -> tuple[str, list[str], list[int]]:
    """The next message and the file descriptors that came with it (SCM_RIGHTS)."""
    try:
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
    except ConnectionResetError:
        # The child died with a message of ours unread: the kernel reports
        # that first, once (ECONNRESET); what it said before dying (its
        # ``error``) is still queued behind it.
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        except ConnectionResetError:
            return "eof", [], []
    if not data:
        close_quietly(*fds)
        return "eof", [], []
    kind, *fields = data.decode("utf-8", "surrogateescape").split("\0")
    return kind, fields, list(fds)


def send_unless_gone(sock: socket.socket, kind: str, *fields: str | int) -> None:
    """``send``, except that a child already gone is not an error here.

    It died for a reason it reported first: that message is still waiting
    to be read, and the next ``recv`` tells it.
    """
    try:
        send(sock, kind, *fields)
    except (BrokenPipeError, ConnectionResetError):
        pass


def send_error(sock: socket.socket, step: str, exc: BaseException) -> None:
    """Report that ``step`` failed with ``exc`` (child side)."""
    err = exc.errno if isinstance(exc, OSError) and exc.errno else 0
    if isinstance(exc, StartError) and exc.errno:
        err = exc.errno
    message = str(exc) or type(exc).__name__
    try:
        send(sock, "error", step, err, message)
    except OSError:
        pass


def raise_error(fields: list[str]) -> None:
    """Turn a child's ``error`` message into the matching exception (parent side)."""
    step, err, message = ([*fields, "", "0", ""])[:3]
    errno = int(err or 0)
    if step == "lookup-executable":
        if errno == 13:  # EACCES
            raise ExecutableNotRunnable(message, step=step, errno=errno)
        raise ExecutableNotFound(message, step=step, errno=errno)
    raise StartError(f"{step}: {message}", step=step, errno=errno or None)


def expect(sock: socket.socket, *kinds: str) -> list[str]:
    """Receive one message and return its fields if its kind is one of ``kinds``.

    A child's ``error`` becomes an exception; an unexpected end means the
    child died without saying why.
    """
    kind, fields = recv(sock)
    if kind == "error":
        raise_error(fields)
    if kind not in kinds:
        if kind == "eof":
            raise StartError("container init exited unexpectedly during setup")
        raise StartError(f"unexpected message from container init: {kind}")
    return fields


def close_quietly(*fds: int | socket.socket | None) -> None:
    for fd in fds:
        if fd is None:
            continue
        try:
            if isinstance(fd, socket.socket):
                fd.close()
            else:
                os.close(fd)
        except OSError:
            pass
