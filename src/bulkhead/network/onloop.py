"""Calling into the daemon's event loop from its worker threads.

The network services that serve sockets (the DNS resolver, the userland
proxy) live on the daemon's asyncio event loop, but the engine changes them
from worker threads (``asyncio.to_thread``). :func:`call_on_loop` runs a
function on the loop and waits for its result: at once when the caller is
the loop itself, else through :func:`asyncio.run_coroutine_threadsafe` (a
function that returns a coroutine has it awaited there too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def call_on_loop(
    loop: asyncio.AbstractEventLoop | None, fn: Callable[[], Any], *, what: str, timeout: float
) -> Any:
    """``fn()`` run on ``loop`` (``what`` names the service in the error when the loop
    is missing or closed); waits at most ``timeout`` seconds from another thread."""
    if loop is None or loop.is_closed():
        raise RuntimeError(f"{what} is not attached to an event loop")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return fn()

    async def call() -> Any:
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
        return result

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=timeout)
