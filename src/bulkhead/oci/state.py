"""The container *state* documents: the runtime-spec's, runc's, and the seccomp agent's.

Vocabulary
----------
*state*
    What a runtime reports about one container (runtime-spec ``runtime.md``):
    ``ociVersion``, ``id``, ``status``, ``pid`` (of the container's init, as
    the host sees it), ``bundle`` and ``annotations``. Hooks read it on
    stdin. Modelled by :class:`State`.
*status*
    ``creating`` (being set up), ``created`` (init waits for ``start``),
    ``running`` (the user's program runs) or ``stopped`` (it exited). runc
    adds ``paused`` (the cgroup is frozen) in its own output.
*runc state*
    What ``runc state ID`` prints and ``runc list --format json`` prints a list
    of: the state plus ``rootfs``, ``created`` (RFC 3339 with nanoseconds)
    and ``owner``, with runc's key order and omissions. Modelled by
    :class:`RuncState`; :func:`encode_runc_state` and :func:`encode_runc_list`
    give runc's exact bytes.
*container process state*
    What a runtime sends the seccomp agent over ``linux.seccomp.listenerPath``
    (with the notify fd as ``SCM_RIGHTS``): :class:`ContainerProcessState`.

Go's ``encoding/json`` escapes ``<``, ``>`` and ``&`` in strings and sorts map
keys; the encoders here do the same so output is byte-for-byte runc's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from bulkhead.errors import SpecError

STATUS_CREATING = "creating"
STATUS_CREATED = "created"
STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"
#: runc's addition: the container's cgroup is frozen
STATUS_PAUSED = "paused"
#: the statuses the runtime-spec defines, in lifecycle order
STATUSES = (STATUS_CREATING, STATUS_CREATED, STATUS_RUNNING, STATUS_STOPPED)

#: name of the seccomp notify fd in :attr:`ContainerProcessState.fds`
SECCOMP_FD_NAME = "seccompFd"


class State(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The runtime-spec state of a container (specs-go ``State``).

    As in Go, a ``pid`` of 0 and empty ``annotations`` are left out of the JSON.
    """

    oci_version: str
    id: str
    status: str
    pid: int = 0
    bundle: str
    annotations: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.annotations:
            self.annotations = None


class RuncState(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """One container as ``runc state`` / ``runc list --format json`` prints it.

    runc's ``containerState``: every field is always present except
    ``annotations``, which is left out when empty. ``pid`` is 0 once the
    container has stopped. ``created`` is :func:`rfc3339_nano` of the
    creation time, ``owner`` the user name owning the state directory.
    """

    oci_version: str
    id: str
    pid: int
    status: str
    bundle: str
    rootfs: str
    created: str
    annotations: dict[str, str] | None = None
    owner: str

    def __post_init__(self) -> None:
        if not self.annotations:
            self.annotations = None


class ContainerProcessState(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """What the seccomp agent receives on ``listenerPath`` (specs-go ``ContainerProcessState``).

    ``fds`` names the file descriptors sent alongside as ``SCM_RIGHTS``, in
    the same order (``["seccompFd"]``); ``metadata`` is the configuration's
    ``listenerMetadata``; ``pid`` is the process the filter was loaded in.
    """

    oci_version: str
    fds: list[str] = []
    pid: int
    metadata: str | None = None
    state: State


# --------------------------------------------------------------------------- Go-compatible JSON

_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def go_json_escape(data: bytes) -> bytes:
    """Escape JSON text the way Go's ``encoding/json`` does (HTML-safe).

    The replaced characters can only occur inside strings, so this works on
    whole documents.
    """
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _go_encode(obj: object, indent: int = 0) -> bytes:
    data = msgspec.json.encode(obj, order="deterministic")
    if indent:
        data = msgspec.json.format(data, indent=indent)
    return go_json_escape(data)


def rfc3339_nano(ns: int) -> str:
    """A time (nanoseconds since the epoch) as Go's ``time.RFC3339Nano`` in UTC.

    Trailing zeros of the fraction are dropped, and the fraction with them
    when it is zero: ``2024-05-01T12:00:00.5Z``, ``2024-05-01T12:00:00Z``.
    """
    secs, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"


def encode_state(state: State) -> bytes:
    """``state`` as compact JSON, as runc writes it to a hook's stdin."""
    return _go_encode(state)


def decode_state(data: bytes, source: str = "state") -> State:
    """Parse a state document; errors are :class:`SpecError` naming ``source``."""
    try:
        return msgspec.json.decode(data, type=State)
    except msgspec.ValidationError as exc:
        raise SpecError(str(exc), where=source) from None
    except msgspec.DecodeError as exc:
        raise SpecError(f"invalid JSON: {exc}", where=source) from None


def encode_runc_state(state: RuncState) -> bytes:
    """What ``runc state`` prints: two-space indented, no trailing newline."""
    return _go_encode(state, indent=2)


def encode_runc_list(states: Sequence[RuncState]) -> bytes:
    """What ``runc list --format json`` prints: one line, ``null`` when empty."""
    if not states:
        return b"null\n"
    return _go_encode(list(states)) + b"\n"


def encode_process_state(state: ContainerProcessState) -> bytes:
    """The message sent to the seccomp agent, as compact JSON."""
    return _go_encode(state)
