"""Docker's JSON progress messages for pulls and pushes.

``POST /images/create`` and ``POST /images/{name}/push`` answer with a
stream of JSON documents, one per line (Docker's *jsonmessage*), that the
docker CLI draws as one line per *id*:

``{"status": "Pulling from library/busybox", "id": "latest"}``
    a status line; with ``id`` it is the line of that id (a layer's short
    digest, or a tag), redrawn in place on a terminal.
``{"status": "Downloading", "progressDetail": {"current": 1, "total": 2}, "progress": "[=>  ] 1B/2B", "id": "..."}``
    a progress bar: ``progressDetail`` for programs, ``progress`` the bar
    as text for clients that only print.
``{"errorDetail": {"message": "..."}, "error": "..."}``
    the operation failed after the stream began (the HTTP status was 200
    already); the CLI prints the message and exits 1.
``{"progressDetail": {}, "aux": {"Tag": ..., "Digest": ..., "Size": ...}}``
    a push's result, for programs.

:class:`PullProgress` and :class:`PushProgress` turn the registry client's
per-blob :class:`~bulkhead.images.registry.Progress` callbacks (called from
its worker threads) into these documents, in Docker's wording, and hand
each to ``emit`` (which must be thread-safe). Download/upload updates of
one blob are sent at most every ``interval`` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bulkhead.images.registry import Progress
from bulkhead.oci.image_spec import is_layer_media_type

Message = dict[str, Any]
Emit = Callable[[Message], None]

BAR_WIDTH = 50


def encode(message: Message) -> bytes:
    """One message as a line of the stream (Docker ends each with ``\\r\\n``)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\r\n"


def status(text: str, id: str | None = None) -> Message:
    msg: Message = {"status": text}
    if id is not None:
        msg["id"] = id
    return msg


def layer_status(text: str, id: str) -> Message:
    """A layer's status line (an empty ``progressDetail``, as Docker sends it)."""
    return {"status": text, "progressDetail": {}, "id": id}


def error(message: str) -> Message:
    """A failure inside the stream."""
    return {"errorDetail": {"message": message}, "error": message}


def human_size(size: float) -> str:
    """Docker's ``units.HumanSize``: decimal units, four significant digits (``2.155MB``)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{units[i]}"


def progress_bar(current: int, total: int) -> str:
    """Docker's text progress bar: ``[=====>      ]  1.2MB/2.2MB`` (50 steps)."""
    if total <= 0:
        return human_size(current)
    filled = min(BAR_WIDTH, 100 * current // total // 2)
    return f"[{'=' * filled}>{' ' * (BAR_WIDTH - filled)}] {human_size(current):>8}/{human_size(total)}"


def short_id(digest: str) -> str:
    """A blob's id on the progress lines: the first 12 hex digits of its digest."""
    return digest.split(":", 1)[-1][:12]


class _Blobs:
    """Per-blob throttling shared by pulls and pushes (thread-safe)."""

    def __init__(self, emit: Emit, interval: float, clock: Callable[[], float]) -> None:
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def due(self, digest: str, current: int, total: int) -> bool:
        now = self.clock()
        with self.lock:
            if current < total and now - self.last.get(digest, -1e9) < self.interval:
                return False
            self.last[digest] = now
            return True

    def bar(self, text: str, p: Progress) -> Message:
        return {
            "status": text,
            "progressDetail": {"current": p.done, "total": p.total},
            "progress": progress_bar(p.done, p.total),
            "id": short_id(p.digest),
        }


class PullProgress:
    """A pull's messages: ``Pulling from``, per layer ``Pulling fs layer`` ... ``Pull complete``.

    ``repository`` is the path shown (``library/busybox``), ``tag`` the tag
    or digest pulled. The first callback (the registry client calls it only
    once the manifest is resolved) emits ``Pulling from``, so that a pull
    failing earlier (no such manifest, refused credentials) has written
    nothing and can still be answered with an HTTP error. Only layers get
    lines (as in Docker, not the image config).
    """

    def __init__(
        self,
        emit: Emit,
        repository: str,
        tag: str,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = _Blobs(emit, interval, clock)
        self.emit = emit
        self.repository = repository
        self.tag = tag
        self._started = False
        self._seen: dict[str, str] = {}  # layer digest -> "exists" | "downloaded"
        self._order: list[str] = []

    @property
    def is_started(self) -> bool:
        """Whether anything was emitted yet."""
        return self._started

    def started(self) -> None:
        """Emit ``Pulling from`` (once)."""
        with self._blobs.lock:
            if self._started:
                return
            self._started = True
        self.emit(status(f"Pulling from {self.repository}", self.tag))

    def __call__(self, p: Progress) -> None:
        self.started()
        if not is_layer_media_type(p.media_type):
            return
        sid = short_id(p.digest)
        with self._blobs.lock:
            first = p.digest not in self._seen
            if first:
                self._seen[p.digest] = "pending"
                self._order.append(p.digest)
        if p.status == "exists":
            with self._blobs.lock:
                self._seen[p.digest] = "exists"
            self.emit(layer_status("Already exists", sid))
            return
        if first:
            self.emit(layer_status("Pulling fs layer", sid))
        if p.status == "downloading":
            if self._blobs.due(p.digest, p.done, p.total):
                self.emit(self._blobs.bar("Downloading", p))
        elif p.status == "retrying":
            self.emit(layer_status("Retrying", sid))
        elif p.status == "done":
            with self._blobs.lock:
                self._seen[p.digest] = "downloaded"
            self.emit(layer_status("Verifying Checksum", sid))
            self.emit(layer_status("Download complete", sid))

    def downloaded(self) -> list[str]:
        """The layers this pull downloaded (not those already there), in the order first seen."""
        return [d for d in self._order if self._seen.get(d) == "downloaded"]

    def extracting(self) -> None:
        """``Extracting`` for each downloaded layer (the layers are being unpacked)."""
        for d in self.downloaded():
            self.emit(layer_status("Extracting", short_id(d)))

    def finished(self, digest: str) -> None:
        """After the image is recorded: ``Pull complete`` per new layer, then ``Digest:``.

        The caller says ``Status: ...`` (:func:`pull_status`): a pull of
        every tag says it once.
        """
        self.started()
        for d in self.downloaded():
            self.emit(layer_status("Pull complete", short_id(d)))
        self.emit(status(f"Digest: {digest}"))


def pull_status(name: str, up_to_date: bool) -> Message:
    """The last line of a pull: ``Status: Downloaded newer image for busybox:latest``."""
    what = "Image is up to date" if up_to_date else "Downloaded newer image"
    return status(f"Status: {what} for {name}")


class PushProgress:
    """A push's messages: ``The push refers to repository``, per layer ``Preparing`` ... ``Pushed``."""

    def __init__(
        self,
        emit: Emit,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = _Blobs(emit, interval, clock)
        self.emit = emit

    def preparing(self, repository: str, layers: list[str]) -> None:
        """The opening lines: the repository, then ``Preparing`` for each layer digest."""
        self.emit(status(f"The push refers to repository [{repository}]"))
        for d in layers:
            self.emit(layer_status("Preparing", short_id(d)))

    def __call__(self, p: Progress) -> None:
        if not is_layer_media_type(p.media_type):
            return
        sid = short_id(p.digest)
        if p.status == "exists":
            self.emit(layer_status("Layer already exists", sid))
        elif p.status == "mounted":
            self.emit(layer_status("Mounted from another repository", sid))
        elif p.status == "uploading":
            if self._blobs.due(p.digest, p.done, p.total):
                self.emit(self._blobs.bar("Pushing", p))
        elif p.status == "retrying":
            self.emit(layer_status("Retrying", sid))
        elif p.status == "done":
            self.emit(layer_status("Pushed", sid))

    def finished(self, tag: str, digest: str, size: int) -> None:
        """``<tag>: digest: sha256:... size: N`` and the ``aux`` result."""
        self.emit(status(f"{tag}: digest: {digest} size: {size}"))
        self.emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}})
