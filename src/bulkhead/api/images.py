"""The Engine API's image endpoints: pull, push, import, load, save, tag, list, remove.

=================================  ===========================================
``POST /images/create``            ``fromImage`` (+ ``tag``, ``platform``): pull,
                                   with JSON progress; ``fromSrc=-``: import the
                                   request body (``repo``, ``tag``, ``message``,
                                   ``changes``, ``platform``); ``fromSrc=URL``:
                                   import the tar found there
``POST /images/{name}/push``       push (``tag``; none: every tag of the repository)
``POST /images/{name}/tag``        ``repo`` + ``tag``: one more name (201)
``GET /images/json``               ImageSummary list; filters ``dangling``,
                                   ``label``, ``reference``, ``before``, ``since``,
                                   ``until``
``GET /images/{name}/json``        ImageInspect
``GET /images/{name}/history``     the build steps, newest first
``DELETE /images/{name}``          untag / delete (``force``; ``noprune`` is
                                   accepted and means nothing: no parent chains here)
``GET /images/{name}/get``,        ``docker save``: a docker-archive tar, streamed
``GET /images/get?names=``
``POST /images/load``              ``docker load``: the archive in the body, streamed
``POST /images/prune``             remove unused images (``dangling``, ``label``, ``until``)
``POST /auth``                     ``docker login``: check credentials with the registry
=================================  ===========================================

*X-Registry-Auth*
    the credentials a client sends with a pull or push: base64url of the
    JSON ``{"username", "password", "auth", "serveraddress",
    "identitytoken"}`` (Docker's AuthConfig). The daemon keeps none of its
    own: ``docker login`` stores them client-side after ``/auth`` said yes.
*insecure registry*
    one spoken to in plain HTTP: the daemon config's ``insecure-registries``
    (``host[:port]`` or a CIDR network) and, as in Docker, every loopback
    host.

Pulls, pushes, loads, imports and saves each run in a thread of their own
(the daemon never forks, so threads are safe): not in asyncio's default
pool, so that a save streaming to a slow client cannot starve the short
SQLite lookups the rest of the daemon does with ``asyncio.to_thread``, and
as daemon threads, so that a daemon told to stop does not wait for a pull
stalled on a registry (what such a pull leaves is what ``kill -9`` leaves:
resumable partial blobs, no image). Their messages reach the client
through a queue as they happen. An error
raised before the first message is an ordinary HTTP error (a pull of a
missing manifest is a 404); after it, an ``errorDetail`` message in the
stream (see :mod:`bulkhead.images.progress`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import datetime
import ipaddress
import json
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar

from bulkhead.api.errors import BadRequest, Conflict, NotFound
from bulkhead.api.routes import Request, Response, Router, StreamResponse, json_response
from bulkhead.errors import (
    AuthenticationError,
    ImageError,
    ImageInUse,
    ImageNotFound,
    InvalidReference,
    NotFoundError,
)
from bulkhead.images import archive
from bulkhead.images.auth import Credentials
from bulkhead.images.content import ContentStore
from bulkhead.images.progress import (
    Message,
    PullProgress,
    PushProgress,
    encode,
    error,
    pull_status,
    status,
)
from bulkhead.images.reference import Reference, is_image_id, parse_reference, valid_tag
from bulkhead.images.registry import ProgressCallback, RegistryClient, RegistryConfig
from bulkhead.images.store import Image, familiar
from bulkhead.oci.image_spec import Descriptor

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.images.store import ImageStore

AUTH_HEADER = "x-registry-auth"
_SPOOL_CHUNK = 1 << 20
T = TypeVar("T")


# --- registry settings and credentials ---------------------------------------------


@dataclass
class DaemonRegistryConfig(RegistryConfig):
    """:class:`RegistryConfig` that also takes CIDR networks as insecure (``10.0.0.0/8``)."""

    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)

    def is_insecure(self, host: str) -> bool:
        if super().is_insecure(host):
            return True
        if host.startswith("["):  # [v6]:port
            name = host[1 : host.index("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        try:
            addr = ipaddress.ip_address(name)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)


class DaemonRegistryClient(RegistryClient):
    """:class:`RegistryClient` whose parallel blob downloads run in daemon threads.

    The base client's thread pool is joined when the interpreter exits, so a
    daemon told to stop would wait for a download stalled on a registry
    (minutes, with its timeouts and retries). Here a stopping daemon just
    goes; what the download leaves is resumable, as after ``kill -9``.
    """

    def _fetch_all(
        self,
        ref: Reference,
        blobs: list[Descriptor],
        store: ContentStore,
        progress: ProgressCallback | None,
    ) -> None:
        unique = list({d.digest: d for d in blobs}.values())
        slots = threading.Semaphore(self.max_workers)
        errors: list[BaseException] = []

        def fetch(desc: Descriptor) -> None:
            with slots:
                if errors:
                    return
                try:
                    self.fetch_blob(ref, desc, store, progress=progress)
                except BaseException as exc:
                    errors.append(exc)

        threads = [
            threading.Thread(target=fetch, args=(d,), name="bulkhead-blob", daemon=True)
            for d in unique
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


def registry_config(insecure: list[str], mirrors: list[str]) -> DaemonRegistryConfig:
    """The daemon's ``insecure-registries`` and ``registry-mirrors`` as a registry config.

    An entry with a ``/`` is a CIDR network; anything else a ``host[:port]``
    (a URL's scheme is dropped, as Docker does). A malformed network is a
    :class:`BadRequest` naming it.
    """
    hosts: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in insecure:
        text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", entry.strip()).rstrip("/")
        if "/" in text:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise BadRequest(f"invalid insecure-registries entry {entry!r}") from None
        elif text:
            hosts.add(text)
    return DaemonRegistryConfig(
        mirrors={"docker.io": list(mirrors)} if mirrors else {},
        insecure=hosts,
        networks=networks,
    )


def registry_info(insecure: list[str], mirrors: list[str]) -> dict[str, Any]:
    """``/info``'s ``RegistryConfig`` for the daemon's settings (what ``docker info`` lists).

    Loopback networks are always insecure (as in Docker); each configured
    ``host[:port]`` gets an insecure entry in ``IndexConfigs``.
    """
    cfg = registry_config(insecure, mirrors)
    cidrs = ["::1/128", "127.0.0.0/8", *(str(n) for n in cfg.networks)]
    mirror_urls = [m if m.endswith("/") else m + "/" for m in mirrors]
    index: dict[str, Any] = {
        "docker.io": {
            "Name": "docker.io",
            "Mirrors": mirror_urls,
            "Secure": True,
            "Official": True,
        }
    }
    for host in sorted(cfg.insecure):
        index[host] = {"Name": host, "Mirrors": [], "Secure": False, "Official": False}
    return {"InsecureRegistryCIDRs": cidrs, "IndexConfigs": index, "Mirrors": mirror_urls}


def server_host(address: str) -> str:
    """``https://127.0.0.1:5000/v2/`` → ``127.0.0.1:5000``; Docker Hub's names → ``docker.io``."""
    text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", address.strip()).split("/", 1)[0]
    if text in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return text


def decode_auth(value: str | None) -> Credentials | None:
    """The credentials of an ``X-Registry-Auth`` header (``None`` when absent or empty).

    Docker encodes it as base64url JSON (with or without padding); ``auth``
    may hold ``base64(user:password)`` as in ``config.json``. A header that
    is not such a document is a :class:`BadRequest`.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    raw: bytes | None = None
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            raw = decode(text + "=" * (-len(text) % 4))
            break
        except (binascii.Error, ValueError):
            continue
    try:
        doc = json.loads(raw) if raw is not None else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise BadRequest("invalid X-Registry-Auth header: not base64-encoded JSON")
    return credentials_of(doc)


def credentials_of(doc: dict[str, Any]) -> Credentials | None:
    """Docker's AuthConfig (``username``/``password``/``auth``/``identitytoken``) as credentials."""
    username = str(doc.get("username") or "")
    password = str(doc.get("password") or "")
    token = str(doc.get("identitytoken") or "")
    if not username and doc.get("auth"):
        try:
            username, _, password = base64.b64decode(str(doc["auth"])).decode().partition(":")
        except (binascii.Error, ValueError):
            raise BadRequest("invalid auth in credentials: not base64 user:password") from None
    if not username and not token:
        return None
    return Credentials(username=username, password=password, identity_token=token)


# --- running blocking work in a thread, its messages streamed ------------------------


def in_thread(func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``func(*args)`` in a new daemon thread; its result (or error) as a future of this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = func(*args), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="bulkhead-image-job", daemon=True).start()
    return future


class _Run:
    """A blocking job in a worker thread whose messages go to the client as they come."""

    def __init__(self, work: Callable[[Callable[[Message], None]], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task = in_thread(work, self._emit)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here: a client that went away never reads it
        self._queue.put_nowait(None)

    def _emit(self, message: Message) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    async def response(self) -> StreamResponse:
        """Wait for the first message: the job's error when it failed before any, as HTTP."""
        first = await self._queue.get()
        if first is None:
            self._task.result()  # raises the job's error
        return StreamResponse(self._chunks(first))

    async def _chunks(self, first: Message | None) -> AsyncIterator[bytes]:
        if first is None:
            return
        yield encode(first)
        while (message := await self._queue.get()) is not None:
            yield encode(message)
        exc = self._task.exception()
        if exc is not None:
            yield encode(error(str(exc) or type(exc).__name__))


class _QueueWriter:
    """A file-like sink (for a worker thread) whose bytes an async generator yields."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self._loop = loop
        self._queue = queue
        self._buffer = bytearray()
        self.cancelled = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= _SPOOL_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self.put(chunk)

    def put(self, item: bytes | None) -> None:
        """Hand ``item`` to the event loop, waiting while the queue is full.

        Gives up (:class:`BrokenPipeError`) when the client went away or the
        loop is gone, so that a worker never blocks forever.
        """
        if self.cancelled:
            raise BrokenPipeError("the client went away")
        try:
            future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # the loop is closed
            raise BrokenPipeError("the daemon is stopping") from None
        while True:
            try:
                future.result(timeout=1)
                return
            except concurrent.futures.TimeoutError:
                if self.cancelled or self._loop.is_closed():
                    future.cancel()
                    raise BrokenPipeError("the client went away") from None


async def _stream_from_thread(produce: Callable[[IO[bytes]], None]) -> AsyncIterator[bytes]:
    """The bytes ``produce(file)`` writes in a worker thread, as they come (backpressured)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    sink = _QueueWriter(loop, queue)

    def work() -> None:
        try:
            produce(sink)  # type: ignore[arg-type]
            sink.flush()
        finally:
            with contextlib.suppress(BrokenPipeError):
                sink.put(None)

    task = in_thread(work)
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        await task  # a failure after the first bytes: the stream just ends early
    finally:
        if not task.done():
            sink.cancelled = True
            while not task.done():  # let the worker's pending puts through
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            task.result()


async def _spool(req: Request, directory: str) -> BinaryIO:
    """The streamed request body in an anonymous temporary file (rewound)."""
    spool = tempfile.TemporaryFile(dir=directory, prefix="upload-")  # noqa: SIM115
    try:
        async for chunk in req.body_stream():
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


# --- list filters -------------------------------------------------------------------


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` do not cross ``/``; ``[...]`` classes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise BadRequest(f"invalid reference filter {pattern!r}: unclosed [")
            body = pattern[i + 1 : j]
            negate = body[:1] in ("^", "!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


_GO_DURATION = re.compile(r"(?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _timestamp(text: str, now: float | None = None) -> float:
    """A filter time: unix seconds (``1700000000[.5]``), RFC 3339, or a Go duration ago (``24h``)."""
    try:
        return float(text)
    except ValueError:
        pass
    if _GO_DURATION.fullmatch(text):
        ago = sum(
            float(n) * _GO_UNITS[u]
            for n, u in re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
        )
        return (time.time() if now is None else now) - ago
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"invalid filter time {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


IMAGE_FILTERS = frozenset({"dangling", "label", "reference", "before", "since", "until"})


def _bool_filter(name: str, values: list[str]) -> bool:
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest(f"invalid filter '{name}={values[-1]}'")


# --- the handlers ------------------------------------------------------------------------


class ImagesAPI:
    """The handlers, over the daemon's :class:`~bulkhead.engine.context.Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.registry = registry_config(
            list(services.config.insecure_registries), list(services.config.registry_mirrors)
        )

    @property
    def store(self) -> ImageStore:
        return self.services.images

    def _get(self, ref: str) -> Image:
        """An image; a missing name is reported as Docker does, tag included (``nope:latest``)."""
        try:
            return self.store.get(ref)
        except ImageNotFound:
            if is_image_id(ref) or not ref or ref.startswith("sha256:"):
                raise
            try:
                name = parse_reference(ref).familiar()
            except ImageError:
                raise ImageNotFound(f"No such image: {ref}") from None
            raise ImageNotFound(f"No such image: {name}") from None

    def _log(self, action: str, actor: str, name: str, image: Image | None = None) -> None:
        """An ``image`` event as moby's ``LogImageEvent``: the image's labels and ``name``.

        ``actor`` and ``name`` are what Docker puts there per action: the
        reference for ``pull``/``push`` (``busybox:latest``, name
        ``busybox``), the id and the new name for ``tag``, the id twice for
        ``untag``, ``delete``, ``import``, ``load`` and ``save``. Safe from
        the worker threads the pulls and loads run in.
        """
        engine = getattr(self.services, "engine", None)
        if engine is None:
            return
        attributes: dict[str, str] = {}
        if image is not None:
            labels = (image.config.get("config") or {}).get("Labels") or {}
            attributes.update({str(k): str(v) for k, v in labels.items()})
        if name:
            attributes["name"] = name
        engine.events.emit("image", action, actor, attributes)

    def _log_removal(self, image: Image, records: list[dict[str, str]]) -> None:
        """``untag`` per name removed, ``delete`` when the image went (``docker rmi``)."""
        for record in records:
            if "Untagged" in record:
                self._log("untag", image.id, image.id, image)
            elif record.get("Deleted") == image.id:
                self._log("delete", image.id, image.id)

    def _spool_dir(self) -> str:
        path = self.store.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _client(self, creds: Credentials | None) -> RegistryClient:
        return DaemonRegistryClient(
            self.registry,
            credentials=lambda _host: creds,
            user_agent="bulkhead",
            retry_manifests=False,
        )

    # -- create: pull or import ----------------------------------------------------------

    async def create(self, req: Request) -> Response | StreamResponse:
        from_image = req.query_str("fromImage") or ""
        from_src = req.query_str("fromSrc") or ""
        if from_image and from_src:
            raise BadRequest("only one of fromImage and fromSrc may be given")
        if from_image:
            return await self._pull(req, from_image)
        if from_src:
            return await self._import(req, from_src)
        raise BadRequest("fromImage or fromSrc is required")

    async def _pull(self, req: Request, from_image: str) -> StreamResponse:
        tag = req.query_str("tag") or ""
        try:
            ref = parse_reference(from_image, default_tag=None)
            if tag:
                ref = ref.with_digest(tag) if ":" in tag else ref.with_tag(tag)
        except InvalidReference as exc:
            raise BadRequest(f"invalid fromImage/tag {from_image!r} {tag!r}: {exc}") from None
        platform = _platform(req.query_str("platform"))
        creds = decode_auth(req.headers.get(AUTH_HEADER))

        def work(emit: Callable[[Message], None]) -> None:
            with self._client(creds) as client:
                if ref.tag is None and ref.digest is None:  # tag="": every tag (docker pull -a)
                    tags = client.list_tags(ref)
                    up_to_date = True
                    for t in tags:
                        up_to_date &= self._pull_one(client, ref.with_tag(t), platform, emit)
                    emit(pull_status(ref.familiar_name(), up_to_date))
                    return
                up_to_date = self._pull_one(client, ref, platform, emit)
                emit(pull_status(ref.familiar(), up_to_date))

        return await _Run(work).response()

    def _pull_one(
        self,
        client: RegistryClient,
        ref: Reference,
        platform: str | None,
        emit: Callable[[Message], None],
    ) -> bool:
        """Pull one tag or digest (in a worker thread); whether the image was up to date."""
        before = None
        with contextlib.suppress(ImageError):
            before = self.store.get(str(ref)).id
        progress = PullProgress(emit, ref.path, ref.digest or ref.tag or "latest")
        with self.store.content.lease():
            try:
                pulled = client.pull(ref, self.store.content, platform=platform, progress=progress)
            except NotFoundError as exc:
                if progress.is_started:
                    raise
                # Nothing said yet: an HTTP 404 in Docker's words.
                raise NotFound(f"manifest for {ref.familiar()} not found: {exc}") from None
            except AuthenticationError as exc:
                if progress.is_started:
                    raise
                # Docker answers a refused pull with 404, never 401: a 401 would make
                # the CLI prompt for a login in the middle of a pull.
                raise NotFound(
                    f"pull access denied for {ref.familiar_name()}, repository does not exist "
                    f"or may require 'docker login': {exc}"
                ) from None
            image = self.store.record_pull(pulled)
        snapshotter = self.services.snapshotter
        if snapshotter is not None and progress.downloaded():
            # As Docker extracts at pull: the first container of the image starts
            # on unpacked layers (snapshots named by chain id, shared by images).
            progress.extracting()
            self.store.unpack(image, snapshotter)
        progress.finished(pulled.digest)
        self._log("pull", ref.familiar(), ref.familiar_name(), image)
        return before == image.id

    async def _import(self, req: Request, from_src: str) -> StreamResponse:
        url = None
        if from_src != "-":
            # A URL to fetch the tar from (Docker adds http:// when there is no scheme).
            url = from_src if "://" in from_src else f"http://{from_src}"
            if not url.startswith(("http://", "https://")):
                raise BadRequest(f"fromSrc={from_src!r}: only - (the body) or an http(s) URL")
        repo = req.query_str("repo") or ""
        tag = req.query_str("tag") or ""
        name: str | None = None
        if repo:
            try:
                ref = parse_reference(repo, default_tag=None)
                if tag:
                    ref = ref.with_tag(tag)
            except InvalidReference as exc:
                raise BadRequest(f"invalid repo/tag {repo!r} {tag!r}: {exc}") from None
            if ref.digest:
                raise BadRequest(f"cannot import as a digest reference: {repo}")
            name = str(ref)
        elif tag:
            raise BadRequest("tag given without repo")
        changes = [c for c in req.query.get("changes", []) if c.strip()]
        try:
            archive.apply_changes({}, changes)
        except ImageError as exc:
            raise BadRequest(f"invalid changes: {exc}") from None
        message = req.query_str("message") or ""
        plat = _platform(req.query_str("platform"))
        platform = None
        if plat is not None:
            os_, _, rest = plat.partition("/")
            arch, _, variant = rest.partition("/")
            platform = {
                "os": os_,
                "architecture": arch,
                **({"variant": variant} if variant else {}),
            }
        spool_dir = self._spool_dir()
        spool = await _spool(req, spool_dir) if url is None else None

        def work(emit: Callable[[Message], None]) -> None:
            nonlocal spool
            if spool is None:
                assert url is not None
                spool = _download(url, spool_dir, emit)
            with spool:
                try:
                    image = archive.import_rootfs(
                        self.store, spool, changes, name, message=message, platform=platform
                    )
                except ImageError as exc:
                    if isinstance(exc, ImageNotFound):
                        raise
                    raise BadRequest(f"import failed: {exc}") from None
            if name is not None:  # moby tags the new image first (TagImageWithReference)
                self._log("tag", image.id, familiar(name), image)
            self._log("import", image.id, image.id, image)
            emit(status(image.id))

        return await _Run(work).response()

    # -- push, tag -------------------------------------------------------------------------

    async def push(self, req: Request) -> StreamResponse:
        name = req.params["name"]
        tag = req.query_str("tag") or ""
        try:
            ref = parse_reference(name, default_tag=None)
            if tag:
                ref = ref.with_tag(tag)
        except InvalidReference as exc:
            raise BadRequest(f"invalid image name {name!r}: {exc}") from None
        if ref.digest:
            raise BadRequest(f"cannot push a digest reference: {name}")
        creds = decode_auth(req.headers.get(AUTH_HEADER))
        if ref.tag:
            tags = [ref.tag]
            try:
                await asyncio.to_thread(self.store.get, str(ref))
            except ImageNotFound:
                raise NotFound(
                    f"An image does not exist locally with the tag: {ref.familiar_name()}"
                ) from None
        else:
            prefix = ref.repository + ":"
            images = await asyncio.to_thread(self.store.list)
            tags = sorted(t[len(prefix) :] for i in images for t in i.tags if t.startswith(prefix))
            if not tags:
                raise NotFound(
                    f"An image does not exist locally with the tag: {ref.familiar_name()}"
                )

        def work(emit: Callable[[Message], None]) -> None:
            with self._client(creds) as client:
                for t in tags:
                    one = ref.with_tag(t)
                    image = self.store.get(str(one))
                    progress = PushProgress(emit)
                    progress.preparing(one.repository, [layer["digest"] for layer in image.layers])
                    desc = client.push(
                        one, self.store.content, image.manifest_digest, progress=progress
                    )
                    self.store.add_repo_digest(image, f"{one.repository}@{desc.digest}")
                    progress.finished(t, desc.digest, desc.size)
                    self._log("push", one.familiar(), one.familiar_name(), image)

        return await _Run(work).response()

    async def tag(self, req: Request) -> Response:
        name = req.params["name"]
        repo = req.query_str("repo") or ""
        tag = req.query_str("tag") or ""
        if not repo:
            raise BadRequest("repo is required: POST /images/{name}/tag?repo=...&tag=...")
        if tag and not valid_tag(tag):
            raise BadRequest(f"invalid tag format: {tag!r}")
        try:
            ref = parse_reference(repo, default_tag=None)
            if tag:
                ref = ref.with_tag(tag)
            elif ref.tag is None:
                ref = ref.with_tag("latest")
        except InvalidReference as exc:
            raise BadRequest(f"invalid repo {repo!r}: {exc}") from None
        if ref.digest:
            raise BadRequest(f"refusing to create a tag with a digest reference: {repo}")
        image = await asyncio.to_thread(self._get, name)
        await asyncio.to_thread(self.store.tag, image, str(ref))
        self._log("tag", image.id, ref.familiar(), image)
        return Response(201, b"", None)

    # -- views -----------------------------------------------------------------------------

    async def list_images(self, req: Request) -> Response:
        filters = req.filters()
        unknown = set(filters) - IMAGE_FILTERS
        if unknown:
            raise BadRequest(f"invalid filter '{sorted(unknown)[0]}'")
        return json_response(await asyncio.to_thread(self._list, filters))

    def _list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        summaries = self.store.summaries()
        out = []
        before = since = until = None
        if filters.get("before"):
            before = self.store.inspect(filters["before"][-1])["Created"]
        if filters.get("since"):
            since = self.store.inspect(filters["since"][-1])["Created"]
        if filters.get("until"):
            until = _timestamp(filters["until"][-1])
        created_of = {i.id: _unix(i.created) for i in self.store.list()}
        for s in summaries:
            if "dangling" in filters and _bool_filter("dangling", filters["dangling"]) != (
                not s["RepoTags"]
            ):
                continue
            if filters.get("label") and not _labels_match(s["Labels"] or {}, filters["label"]):
                continue
            created = created_of.get(s["Id"], s["Created"])
            if before is not None and not created < _unix(before):
                continue
            if since is not None and not created > _unix(since):
                continue
            if until is not None and not s["Created"] < until:
                continue
            if filters.get("reference"):
                tags = [
                    t
                    for t in s["RepoTags"]
                    if any(
                        path_match(p, t) or path_match(p, t.rsplit(":", 1)[0])
                        for p in filters["reference"]
                    )
                ]
                if not tags:
                    continue
                s = {**s, "RepoTags": tags}
            out.append(s)
        return out

    async def inspect(self, req: Request) -> Response:
        return json_response(await asyncio.to_thread(self.store.inspect, req.params["name"]))

    async def history(self, req: Request) -> Response:
        return json_response(await asyncio.to_thread(self.store.history, req.params["name"]))

    # -- remove, prune ------------------------------------------------------------------------

    async def remove(self, req: Request) -> Response:
        name = req.params["name"]
        force = req.query_bool("force")
        req.query_bool("noprune")  # validated; nothing to keep: no parent chains here
        return json_response(await asyncio.to_thread(self._remove, name, force))

    def _remove(self, name: str, force: bool) -> list[dict[str, str]]:
        image = self._get(name)
        users = self.store.users(image)
        if not users or not force:
            # No user: delete. Users and no force: the store refuses (409, naming them).
            records = self.store.remove(name, force, snapshotter=self.services.snapshotter)
            self._log_removal(image, records)
            return records
        short = image.short_id
        running = [u for u in users if self._running(u)]
        if running:
            raise Conflict(
                f"conflict: unable to delete {short} (cannot be forced) - "
                f"image is being used by running container {running[0][:12]}"
            )
        # Forced, used by stopped containers only: the names go, the image stays
        # (dangling) for its containers until they are removed.
        names = self._names_to_untag(image, name)
        if not names:
            raise ImageInUse(
                f"conflict: unable to delete {short} - image is being used by stopped "
                f"container {users[0][:12]}; remove the container first"
            )
        out = []
        for n in names:
            self.store.untag(n)
            out.append({"Untagged": familiar(n)})
        self._log_removal(image, out)
        return out

    @staticmethod
    def _names_to_untag(image: Image, ref: str) -> list[str]:
        if is_image_id(ref) or image.id.removeprefix("sha256:").startswith(
            ref.removeprefix("sha256:")
        ):
            return list(image.tags)
        with contextlib.suppress(ImageError):
            name = str(parse_reference(ref))
            if name in image.tags:
                return [name]
        return list(image.tags)

    def _running(self, container_id: str) -> bool:
        engine = getattr(self.services, "engine", None)
        if engine is None:
            return False
        try:
            container = engine.get(container_id)
        except Exception:
            return False
        return bool(getattr(getattr(container, "state", None), "running", False))

    async def prune(self, req: Request) -> Response:
        filters = req.filters()
        unknown = set(filters) - {"dangling", "label", "label!", "until"}
        if unknown:
            raise BadRequest(f"invalid filter '{sorted(unknown)[0]}'")
        dangling_only = (
            _bool_filter("dangling", filters["dangling"]) if filters.get("dangling") else True
        )
        return json_response(await asyncio.to_thread(self._prune, filters, dangling_only))

    def _prune(self, filters: dict[str, list[str]], dangling_only: bool) -> dict[str, Any]:
        until = _timestamp(filters["until"][-1]) if filters.get("until") else None

        def keep(image: Image) -> bool:
            """Whether the filters spare ``image`` (Docker: label, label!, until)."""
            labels = (image.config.get("config") or {}).get("Labels") or {}
            if filters.get("label") and not _labels_match(labels, filters["label"]):
                return True
            if filters.get("label!") and any(_labels_match(labels, [x]) for x in filters["label!"]):
                return True
            return until is not None and not _unix(image.created) < until

        report = self.store.prune(dangling_only, snapshotter=self.services.snapshotter, keep=keep)
        # as rmi: "untag" per name, "delete" per image (each image's records end with Deleted)
        untagged = 0
        for record in report["ImagesDeleted"] or []:
            if "Untagged" in record:
                untagged += 1
            elif "Deleted" in record:
                for _ in range(untagged):
                    self._log("untag", record["Deleted"], record["Deleted"])
                self._log("delete", record["Deleted"], record["Deleted"])
                untagged = 0
        events = getattr(getattr(self.services, "engine", None), "events", None)
        if events is not None:  # Docker: one "prune" event with the bytes reclaimed
            events.emit("image", "prune", "", {"reclaimed": str(report["SpaceReclaimed"])})
        return report

    # -- save, load ---------------------------------------------------------------------------

    async def save_one(self, req: Request) -> StreamResponse:
        return await self._save([req.params["name"]])

    async def save_many(self, req: Request) -> StreamResponse:
        names = [n for n in req.query.get("names", []) if n]
        if not names:
            raise BadRequest("names is required: GET /images/get?names=...")
        return await self._save(names)

    async def _save(self, names: list[str]) -> StreamResponse:
        images = [await asyncio.to_thread(self.store.get, n) for n in names]  # 404 before a byte

        def produce(out: IO[bytes]) -> None:
            archive.save(self.store, names, out)  # type: ignore[arg-type]
            for image in {i.id: i for i in images}.values():
                self._log("save", image.id, image.id, image)

        return StreamResponse(_stream_from_thread(produce), content_type="application/x-tar")

    async def load(self, req: Request) -> StreamResponse:
        req.query_bool("quiet")  # validated; there are no progress bars to leave out
        spool = await _spool(req, self._spool_dir())

        def work(emit: Callable[[Message], None]) -> None:
            with spool:
                try:
                    loaded = archive.load(self.store, spool)
                except ImageError as exc:
                    raise BadRequest(f"invalid image archive: {exc}") from None
            seen: set[str] = set()
            for item in loaded:
                with contextlib.suppress(ImageError):
                    image = self.store.get(item)
                    if image.id not in seen:
                        seen.add(image.id)
                        self._log("load", image.id, image.id, image)
            for item in loaded:
                if item.startswith("sha256:"):
                    emit({"stream": f"Loaded image ID: {item}\n"})
                else:
                    emit({"stream": f"Loaded image: {item}\n"})

        return await _Run(work).response()

    # -- login ----------------------------------------------------------------------------------

    async def auth(self, req: Request) -> Response:
        doc = req.json()
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON AuthConfig object")
        creds = credentials_of(doc)
        if creds is None:
            raise BadRequest("username (or identitytoken) is required")
        host = server_host(str(doc.get("serveraddress") or ""))

        def check() -> None:
            with self._client(creds) as client:
                client.login(host)

        await asyncio.to_thread(check)
        return json_response({"Status": "Login Succeeded", "IdentityToken": ""})


def _download(url: str, directory: str, emit: Callable[[Message], None]) -> BinaryIO:
    """``docker import URL``: the tar at ``url`` in a temporary file (rewound)."""
    import httpx

    spool = tempfile.TemporaryFile(dir=directory, prefix="import-")  # noqa: SIM115
    try:
        with (
            httpx.Client(timeout=30, follow_redirects=True, trust_env=False) as http,
            http.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise BadRequest(f"import from {url}: HTTP {resp.status_code}")
            emit(status(f"Downloading from {url}"))
            for chunk in resp.iter_bytes(_SPOOL_CHUNK):
                spool.write(chunk)
        spool.seek(0)
    except httpx.HTTPError as exc:
        spool.close()
        raise BadRequest(f"import from {url}: {exc}") from None
    except BaseException:
        spool.close()
        raise
    return spool


def _platform(text: str | None) -> str | None:
    """A ``platform`` parameter, checked (``linux/amd64``); ``None`` when empty."""
    if not text:
        return None
    from bulkhead.oci.image_spec import parse_platform

    try:
        p = parse_platform(text)
    except ValueError as exc:
        raise BadRequest(f"invalid platform {text!r}: {exc}") from None
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def _unix(created: Any) -> float:
    if isinstance(created, int | float):
        return float(created)
    if not isinstance(created, str) or not created:
        return 0.0
    text = created.replace("Z", "+00:00")
    if "." in text:  # nanoseconds: Python takes at most microseconds
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def register(router: Router, services: Services) -> None:
    """Add the image endpoints to ``router``."""
    api = ImagesAPI(services)
    router.post("/images/create", stream_body=True)(api.create)
    router.get("/images/json")(api.list_images)
    router.post("/images/load", stream_body=True)(api.load)
    router.get("/images/get")(api.save_many)
    router.post("/images/prune")(api.prune)
    router.post("/auth")(api.auth)
    router.get("/images/{name:path}/json")(api.inspect)
    router.get("/images/{name:path}/history")(api.history)
    router.get("/images/{name:path}/get")(api.save_one)
    router.post("/images/{name:path}/push")(api.push)
    router.post("/images/{name:path}/tag")(api.tag)
    router.delete("/images/{name:path}")(api.remove)


def iter_messages(body: bytes) -> Iterator[dict[str, Any]]:
    """The JSON messages of a progress stream (for tests and clients)."""
    for line in body.splitlines():
        if line.strip():
            yield json.loads(line)
