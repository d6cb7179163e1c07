"""Pull and push progress: Docker's JSON-lines messages shown as rich bars or as lines.

Each message is ``{"status": ..., "id": <layer or tag>, "progressDetail":
{"current", "total"}}``; ``{"errorDetail": {"message": ...}, "error": ...}``
ends the stream with an error. On a terminal every layer gets a bar (rich,
imported only here, only when pulling); otherwise one line per step, as
docker prints without a terminal (progress-only updates left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any


class StreamError(Exception):
    """The daemon reported an error inside the progress stream."""


def _error_of(msg: dict[str, Any]) -> str | None:
    detail = msg.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    if msg.get("error"):
        return str(msg["error"])
    return None


def show_plain(messages: Iterable[dict[str, Any]], out: IO[str]) -> None:
    for msg in messages:
        err = _error_of(msg)
        if err is not None:
            raise StreamError(err)
        if "stream" in msg:
            out.write(str(msg["stream"]))
            continue
        status = msg.get("status")
        if not status:
            continue
        detail = msg.get("progressDetail") or {}
        if detail.get("current") and status in ("Downloading", "Extracting", "Pushing"):
            continue
        ident = msg.get("id")
        out.write(f"{ident}: {status}\n" if ident else f"{status}\n")
        out.flush()


def show_bars(messages: Iterable[dict[str, Any]], out: IO[str]) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from bulkhead.cli.fmt import human_size

    console = Console(file=out)
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.fields[layer]}: {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
        console=console,
        transient=False,
    ) as progress:
        for msg in messages:
            err = _error_of(msg)
            if err is not None:
                raise StreamError(err)
            if "stream" in msg:
                progress.console.print(
                    str(msg["stream"]).rstrip("\n"), markup=False, highlight=False
                )
                continue
            status = str(msg.get("status") or "")
            ident = msg.get("id")
            detail = msg.get("progressDetail") or {}
            is_layer = bool(ident) and (
                detail
                or status
                in (
                    "Pulling fs layer",
                    "Waiting",
                    "Download complete",
                    "Pull complete",
                    "Already exists",
                    "Verifying Checksum",
                    "Preparing",
                    "Pushed",
                    "Layer already exists",
                    "Mounted from",
                )
                or status.startswith("Mounted from")
            )
            if not is_layer:
                line = f"{ident}: {status}" if ident else status
                progress.console.print(line, markup=False, highlight=False)
                continue
            key = str(ident)
            if key not in tasks:
                tasks[key] = progress.add_task(status, layer=key, total=None, size="")
            task = tasks[key]
            current, total = detail.get("current"), detail.get("total")
            if total:
                size = f"{human_size(float(current or 0))}/{human_size(float(total))}"
                progress.update(
                    task, description=status, completed=current or 0, total=total, size=size
                )
            elif status in ("Pull complete", "Already exists", "Pushed", "Layer already exists"):
                t = progress.tasks[task].total or 1
                progress.update(task, description=status, total=t, completed=t, size="")
            else:
                progress.update(task, description=status)


def show(messages: Iterable[dict[str, Any]], out: IO[str], quiet: bool = False) -> None:
    """Show the messages (bars on a terminal); :class:`StreamError` on an error message."""
    if quiet:
        for msg in messages:
            err = _error_of(msg)
            if err is not None:
                raise StreamError(err)
        return
    if out.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            show_plain(messages, out)
            return
        show_bars(messages, out)
    else:
        show_plain(messages, out)
