"""OCI lifecycle hooks: programs the runtime runs at fixed points of a container's life.

Each hook gets the container's *state* (JSON: ociVersion, id, status, pid,
bundle, annotations) on its stdin. Where and when (runtime-spec config.md):

================  =========================================  ==================
hook              when                                       runs in
================  =========================================  ==================
prestart          after namespaces exist, before pivot_root  runtime namespace
createRuntime     right after prestart                       runtime namespace
createContainer   after createRuntime, before pivot_root     container namespace
startContainer    at start, before the user's program        container namespace
poststart         after the user's program started           runtime namespace
poststop          after the container was deleted            runtime namespace
================  =========================================  ==================

A failing prestart, createRuntime, createContainer or startContainer hook
fails the operation (and the container is torn down); poststart and poststop
failures are only logged, as the spec says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from bulkhead import logs
from bulkhead.errors import HookError


def state_json(
    *,
    container_id: str,
    status: str,
    pid: int,
    bundle: str,
    annotations: dict[str, str] | None,
    oci_version: str = "1.2.0",
) -> bytes:
    """The state document hooks read on stdin."""
    doc: dict[str, Any] = {
        "ociVersion": oci_version,
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
    }
    if annotations:
        doc["annotations"] = annotations
    return msgspec.json.encode(doc)


def with_status(state: bytes, status: str) -> bytes:
    """The same state document with another ``status``."""
    if not state:
        return state
    doc = msgspec.json.decode(state)
    doc["status"] = status
    return msgspec.json.encode(doc)


def run_hook(hook: Any, state: bytes, kind: str) -> None:
    """Run one hook (a runtime-spec ``Hook``) with ``state`` on its stdin; raise HookError."""
    args = list(hook.args) if hook.args else [hook.path]
    env = list(hook.env or [])
    env_map = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    timeout = hook.timeout if hook.timeout else None
    if timeout is not None and timeout <= 0:
        raise HookError(f"{kind} hook {hook.path}: timeout must be positive, got {timeout}")
    import subprocess  # only when there are hooks: it costs a millisecond at start-up

    try:
        proc = subprocess.run(
            args,
            executable=hook.path,
            input=state,
            env=env_map,
            capture_output=True,
            timeout=timeout,
            check=False,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise HookError(f"{kind} hook {hook.path} did not finish within {timeout}s") from None
    except OSError as exc:
        raise HookError(f"{kind} hook {hook.path}: {exc.strerror}") from None
    if proc.returncode != 0:
        detail = (
            proc.stderr.decode(errors="replace").strip()
            or proc.stdout.decode(errors="replace").strip()
        )
        status = (
            f"exit status {proc.returncode}"
            if proc.returncode > 0
            else f"signal {-proc.returncode}"
        )
        raise HookError(
            f"{kind} hook {hook.path} failed: {status}" + (f": {detail}" if detail else "")
        )


def run_hooks(hooks: Sequence[Any] | None, state: bytes, kind: str) -> None:
    """Run ``hooks`` in order; the first failure raises :class:`HookError`."""
    for hook in hooks or ():
        run_hook(hook, state, kind)


def run_hooks_logged(hooks: Sequence[Any] | None, state: bytes, kind: str) -> None:
    """Run ``hooks`` in order; failures are logged as warnings and do not stop the rest."""
    for hook in hooks or ():
        try:
            run_hook(hook, state, kind)
        except HookError as exc:
            logs.warning(__name__, str(exc))
