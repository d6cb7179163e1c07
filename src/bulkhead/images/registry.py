"""A client of the OCI distribution spec: pull and push images.

Vocabulary (the distribution spec's, which Docker's registry API became):

*registry*
    an HTTP server under ``/v2/``; an image's reference names it by its
    *domain* (``docker.io``, ``127.0.0.1:5000``). Docker Hub's API is at
    ``registry-1.docker.io``.
*repository*
    a path inside a registry (``library/busybox``) holding manifests and blobs.
*manifest*
    a small JSON document, addressed by tag or digest at
    ``/v2/<repo>/manifests/<tag|digest>``: an image manifest (config + layers)
    or an *index* (a manifest list: one manifest per platform). Its digest is
    the sha256 of its exact bytes, which the registry also sends as
    ``Docker-Content-Digest``; both are checked.
*blob*
    anything else (a config, a layer), addressed only by digest at
    ``/v2/<repo>/blobs/<digest>``.
*mirror*
    another registry that serves the same repositories (a pull-through cache);
    mirrors of a domain are tried before the domain itself, for pulls only.
*insecure registry*
    one spoken to in plain HTTP. Loopback hosts (``localhost``,
    ``127.0.0.0/8``, ``::1``) are insecure without being configured, as in
    Docker.

A pull resolves the reference to a manifest (following an index to the
platform asked for, by default this host's), then fetches the config and
layers in parallel into the :class:`~bulkhead.images.content.ContentStore`,
each through a verifying writer (digest and size). A blob already in the store
is skipped; one whose download was cut off continues where it stopped, with an
HTTP ``Range`` request. Transient failures (5xx, 429, connection errors,
timeouts, a stream that ends early) are retried with exponential back-off.
Manifests are written to the store last, children before parents, so a
manifest in the store always has all its blobs.

A push uploads each blob that the registry lacks (``HEAD`` first; a
cross-repository *mount* when the caller names a source repository of the same
registry; otherwise ``POST`` an upload session and ``PUT`` the blob in one
go, or ``PATCH`` it in chunks with ``Content-Range`` then ``PUT``), then
``PUT``\\ s the manifest by tag or digest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from bulkhead.errors import (
    AuthenticationError,
    ContentError,
    DigestMismatch,
    ImageError,
    NotFoundError,
    RegistryError,
    RegistryUnavailable,
    SizeMismatch,
)
from bulkhead.images.auth import Authenticator, Credentials, DockerCredentialStore
from bulkhead.images.content import ContentStore, Writer
from bulkhead.images.reference import Reference, parse_reference
from bulkhead.oci.image_spec import (
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    host_platform,
    parse_manifest,
    parse_platform,
    select_manifest,
)

__all__ = [
    "MANIFEST_ACCEPT",
    "Progress",
    "PulledImage",
    "RegistryClient",
    "RegistryConfig",
]

#: What we accept for manifests, in order of preference.
MANIFEST_MEDIA_TYPES = (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
#: A manifest larger than this is refused (containerd's limit is 4 MiB).
MAX_MANIFEST_SIZE = 4 << 20
DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"

T = TypeVar("T")


# --- configuration ---------------------------------------------------------------


@dataclass
class RegistryConfig:
    """Where registries are and how to speak to them.

    ``mirrors`` maps a reference domain (``docker.io``) to base URLs of
    mirrors (``http://127.0.0.1:5001``), tried in order before the domain for
    pulls. ``insecure`` lists ``host[:port]`` spoken to in plain HTTP (also a
    bare host, for all its ports). Loopback hosts always are.
    """

    mirrors: dict[str, list[str]] = field(default_factory=dict)
    insecure: set[str] = field(default_factory=set)

    def is_insecure(self, host: str) -> bool:
        if host in self.insecure:
            return True
        name = _hostname(host)
        if name in self.insecure or name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def endpoints(self, domain: str, *, pull: bool = True) -> list[Endpoint]:
        """Where to send requests for ``domain``: mirrors first (pulls only), then itself."""
        out: list[Endpoint] = []
        if pull:
            for url in self.mirrors.get(domain, []):
                parsed = urllib.parse.urlsplit(url if "://" in url else "https://" + url)
                host = parsed.netloc
                scheme = parsed.scheme
                if "://" not in url and self.is_insecure(host):
                    scheme = "http"
                prefix = parsed.path.rstrip("/")
                out.append(Endpoint(host, f"{scheme}://{host}{prefix}", mirror=True))
        host = DOCKER_HUB_API_HOST if domain == DOCKER_HUB_DOMAIN else domain
        scheme = "http" if self.is_insecure(host) else "https"
        out.append(Endpoint(host, f"{scheme}://{host}", mirror=False))
        return out


def _hostname(host: str) -> str:
    """``host:port`` → ``host`` (``[::1]:5000`` → ``::1``)."""
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


@dataclass(frozen=True)
class Endpoint:
    """One registry (or mirror) base URL; ``host`` keys its credentials and tokens."""

    host: str
    base_url: str
    mirror: bool = False

    def url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path}"


# --- results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What the ``progress`` callback of a pull or push is told about one blob.

    ``status`` is ``"exists"`` (already stored / already in the registry),
    ``"mounted"``, ``"downloading"`` / ``"uploading"`` (``done`` of ``total``
    bytes), ``"retrying"`` or ``"done"``.
    """

    digest: str
    media_type: str
    status: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class PulledImage:
    """What a pull stored: the chosen image manifest and, above it, the index (if any)."""

    reference: Reference
    #: The digest the reference resolved to: the index's when there is one.
    digest: str
    #: The image manifest chosen for the platform (its digest and parsed form).
    manifest_digest: str
    manifest: Manifest
    config_digest: str
    layers: list[Descriptor]
    index: Index | None = None
    media_type: str = ""


# --- the client ------------------------------------------------------------------


class _Retry(Exception):
    """A transient failure: try again after a back-off."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _error_detail(resp: httpx.Response) -> tuple[str, str | None]:
    """The distribution spec's ``{"errors": [{"code", "message"}]}``, as text and code."""
    try:
        body = resp.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code", "")) or None
            parts = [f"{e.get('code', '')}: {e.get('message', '')}" for e in errors]
            return "; ".join(parts), code
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        pass
    try:
        text = resp.text.strip()
    except httpx.ResponseNotRead:
        text = ""
    return text[:200], None


class RegistryClient:
    """Pulls from and pushes to registries (one ``httpx.Client``, thread-safe).

    ``credentials`` looks up the :class:`~bulkhead.images.auth.Credentials`
    of a host (default: Docker's ``config.json``). ``max_workers`` blobs are
    downloaded at once; each request is tried ``retries + 1`` times with a
    back-off starting at ``backoff`` seconds. ``transport`` is for tests.
    """

    def __init__(
        self,
        config: RegistryConfig | None = None,
        *,
        credentials: Callable[[str], Credentials | None] | None = None,
        max_workers: int = 4,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float = 30.0,
        chunk_size: int = 1 << 20,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "bulkhead",
        retry_manifests: bool = True,
    ) -> None:
        self.config = config or RegistryConfig()
        #: False: a manifest request fails at once (a daemon's pull of an unreachable
        #: registry answers in milliseconds, as Docker's does); blobs are still retried.
        self.retry_manifests = retry_manifests
        self.max_workers = max(1, max_workers)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.chunk_size = chunk_size
        limits = httpx.Limits(max_connections=max(8, 2 * self.max_workers))
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            transport=transport,
            limits=limits,
            headers={"User-Agent": user_agent},
            trust_env=False,
        )
        lookup = credentials if credentials is not None else DockerCredentialStore().get
        self.auth = Authenticator(self._http, lookup)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests with auth and retries ---------------------------------------------

    def _send(
        self,
        ep: Endpoint,
        method: str,
        url: str,
        scopes: Sequence[str],
        *,
        headers: dict[str, str] | None = None,
        content: bytes | Iterable[bytes] | Callable[[], bytes | Iterable[bytes]] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """One request, answering auth challenges and retrying transient failures.

        Returns the response whatever its status, except that 5xx/429 and
        transport errors are retried and then raised as RegistryUnavailable.
        ``content`` may be a callable that makes a fresh body for each attempt.
        With ``stream`` the caller must close the response.
        """
        attempts = self.retries + 1 if retry else 1
        last: Exception | None = None
        auth_tries = 0
        attempt = 0
        while attempt < attempts:
            hdrs = dict(headers or {})
            authz = self.auth.authorization(ep.host, scopes)
            if authz:
                hdrs["Authorization"] = authz
            body = content() if callable(content) else content
            try:
                req = self._http.build_request(method, url, headers=hdrs, content=body)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                last = e
                attempt += 1
                self._sleep(attempt, attempts)
                continue
            if resp.status_code == 401 and auth_tries < 2:
                auth_tries += 1
                resp.read()
                resp.close()
                if self.auth.handle_challenge(ep.host, resp, scopes):
                    continue
                return resp
            if resp.status_code >= 500 or resp.status_code == 429:
                resp.read()
                resp.close()
                detail, _ = _error_detail(resp)
                if _permanent(resp):
                    # A 5xx that names what is wrong (distribution answers a
                    # manifest with unknown blobs so): asking again won't help.
                    return resp
                last = _Retry(f"HTTP {resp.status_code} {detail}".strip(), status=resp.status_code)
                attempt += 1
                self._sleep(attempt, attempts, resp.headers.get("retry-after"))
                continue
            return resp
        status = last.status if isinstance(last, _Retry) else None
        raise RegistryUnavailable(
            f"{method} {url}: {last} (after {attempts} attempt{'s' if attempts > 1 else ''})",
            status=status,
        )

    def _sleep(self, attempt: int, attempts: int, retry_after: str | None = None) -> None:
        if attempt >= attempts:
            return
        delay = self.backoff * (2 ** (attempt - 1))
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 30.0))
        time.sleep(delay * (0.5 + random.random() / 2))

    def _raise_for(self, resp: httpx.Response, what: str) -> None:
        """Turn a 4xx answer into the right RegistryError."""
        if resp.status_code < 400:
            return
        if not resp.is_closed:
            resp.read()
            resp.close()
        detail, code = _error_detail(resp)
        msg = f"{what}: HTTP {resp.status_code}" + (f" ({detail})" if detail else "")
        if resp.status_code in (401, 403):
            raise AuthenticationError(msg, status=resp.status_code, code=code)
        if resp.status_code == 404:
            raise NotFoundError(msg, status=resp.status_code, code=code)
        raise RegistryError(msg, status=resp.status_code, code=code)

    @staticmethod
    def _scope(ref: Reference, actions: str = "pull") -> str:
        return f"repository:{ref.path}:{actions}"

    def login(self, domain: str) -> str:
        """What ``docker login`` checks: ``GET /v2/`` with the credentials; returns the URL asked.

        A registry that refuses them (Basic, or the token server of a Bearer
        challenge) raises :class:`AuthenticationError`; one that asks for
        none accepts anything, as in Docker.
        """
        ep = self.config.endpoints(domain, pull=False)[0]
        url = ep.url("")
        resp = self._send(ep, "GET", url, [], retry=False)
        self._raise_for(resp, f"login to {url}")
        return url

    # --- manifests ---------------------------------------------------------------

    def _manifest_from(
        self, ep: Endpoint, ref: Reference, target: str, *, expected: Descriptor | None = None
    ) -> tuple[bytes, str, str]:
        """GET a manifest (by tag or digest) from one endpoint; verified. → (data, type, digest)."""
        url = ep.url(f"{ref.path}/manifests/{target}")
        resp = self._send(
            ep,
            "GET",
            url,
            [self._scope(ref)],
            headers={"Accept": MANIFEST_ACCEPT},
            retry=self.retry_manifests,
        )
        self._raise_for(resp, f"manifest {ref.domain}/{ref.path}:{target}")
        data = resp.content
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"manifest {target} is larger than {MAX_MANIFEST_SIZE} bytes")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        header_digest = resp.headers.get("docker-content-digest")
        algorithm = "sha256"
        if target.startswith("sha512:") or (header_digest or "").startswith("sha512:"):
            algorithm = "sha512"
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if header_digest and header_digest != digest:
            raise DigestMismatch(
                f"manifest {target} from {ep.host}: Docker-Content-Digest says "
                f"{header_digest}, the content hashes to {digest}",
                expected=header_digest,
                actual=digest,
            )
        if ":" in target and target != digest:
            raise DigestMismatch(
                f"manifest {target} from {ep.host} hashes to {digest}",
                expected=target,
                actual=digest,
            )
        if expected is not None and expected.size and expected.size != len(data):
            raise SizeMismatch(
                f"manifest {target}: {len(data)} bytes, its descriptor says {expected.size}",
                digest,
                expected=expected.size,
                actual=len(data),
            )
        return data, media_type, digest

    def _with_endpoints(
        self, ref: Reference, fn: Callable[[Endpoint], T], *, pull: bool = True
    ) -> tuple[Endpoint, T]:
        """Run ``fn`` on the mirrors then the registry; the first that works wins."""
        errors: list[str] = []
        endpoints = self.config.endpoints(ref.domain, pull=pull)
        for ep in endpoints:
            try:
                return ep, fn(ep)
            except (RegistryError, ContentError) as e:
                if not ep.mirror:
                    if errors:
                        e.args = (f"{e} (mirrors: {'; '.join(errors)})",)
                    raise
                errors.append(f"{ep.base_url}: {e}")
        raise RegistryError("no endpoint")  # pragma: no cover - the registry is last

    def resolve(self, ref: str | Reference) -> Descriptor:
        """The descriptor (media type, digest, size) a reference points to.

        ``HEAD`` first; a registry that sends no ``Docker-Content-Digest``
        (or a reference by digest that must be checked) is asked by ``GET``.
        """
        r = parse_reference(ref) if isinstance(ref, str) else ref
        target = r.digest or r.tag or "latest"

        def head(ep: Endpoint) -> Descriptor:
            if not r.digest:
                url = ep.url(f"{r.path}/manifests/{target}")
                resp = self._send(
                    ep,
                    "HEAD",
                    url,
                    [self._scope(r)],
                    headers={"Accept": MANIFEST_ACCEPT},
                    retry=self.retry_manifests,
                )
                self._raise_for(resp, f"manifest {r.domain}/{r.path}:{target}")
                digest = resp.headers.get("docker-content-digest")
                media_type = resp.headers.get("content-type", "").split(";")[0].strip()
                length = resp.headers.get("content-length")
                if digest and media_type in MANIFEST_MEDIA_TYPES and length and length.isdigit():
                    return Descriptor(media_type=media_type, digest=digest, size=int(length))
            data, media_type, digest = self._manifest_from(ep, r, target)
            media_type = _manifest_media_type(data, media_type)
            return Descriptor(media_type=media_type, digest=digest, size=len(data))

        return self._with_endpoints(r, head)[1]

    def fetch_manifest(self, ref: str | Reference) -> tuple[bytes, str, str]:
        """The manifest (or index) a reference names: ``(bytes, media_type, digest)``, verified."""
        r = parse_reference(ref) if isinstance(ref, str) else ref
        target = r.digest or r.tag or "latest"

        def get(ep: Endpoint) -> tuple[bytes, str, str]:
            data, media_type, digest = self._manifest_from(ep, r, target)
            return data, _manifest_media_type(data, media_type), digest

        return self._with_endpoints(r, get)[1]

    def list_tags(self, ref: str | Reference) -> list[str]:
        """The tags of a repository (``/v2/<name>/tags/list``, following ``Link`` pages)."""
        r = parse_reference(ref) if isinstance(ref, str) else ref
        ep = self.config.endpoints(r.domain, pull=False)[0]
        url: str | None = ep.url(f"{r.path}/tags/list")
        tags: list[str] = []
        while url:
            resp = self._send(ep, "GET", url, [self._scope(r)])
            self._raise_for(resp, f"tags of {r.domain}/{r.path}")
            body = resp.json()
            tags.extend(body.get("tags") or [])
            nxt = resp.links.get("next", {}).get("url")
            url = urllib.parse.urljoin(url, nxt) if nxt else None
        return tags

    # --- blobs ---------------------------------------------------------------------

    def fetch_blob(
        self,
        ref: str | Reference,
        desc: Descriptor,
        store: ContentStore,
        *,
        progress: ProgressCallback | None = None,
    ) -> bool:
        """Download a blob into ``store``, verified; False when it was already there.

        A partial download left by an earlier attempt (of this or an earlier
        pull) is continued with a ``Range`` request. A blob with ``urls``
        (a *foreign* or *non-distributable* layer, which registries usually do
        not hold) is fetched from those first, then from the registry.
        """
        r = parse_reference(ref) if isinstance(ref, str) else ref
        if store.exists(desc.digest):
            if progress:
                progress(Progress(desc.digest, desc.media_type, "exists", desc.size, desc.size))
            return False
        errors: list[str] = []
        for url in desc.urls or []:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                errors.append(f"{url}: not an http(s) URL")
                continue
            ep = Endpoint(parts.netloc, f"{parts.scheme}://{parts.netloc}", mirror=True)
            try:
                self._fetch_blob_from(ep, r, desc, store, progress, url=url)
                return True
            except (RegistryError, ContentError) as e:
                errors.append(f"{url}: {e}")
        try:
            self._with_endpoints(r, lambda ep: self._fetch_blob_from(ep, r, desc, store, progress))
        except (RegistryError, ContentError) as e:
            if errors:
                e.args = (f"{e} (its urls: {'; '.join(errors)})",)
            raise
        return True

    def _fetch_blob_from(
        self,
        ep: Endpoint,
        ref: Reference,
        desc: Descriptor,
        store: ContentStore,
        progress: ProgressCallback | None,
        *,
        url: str | None = None,
    ) -> None:
        url = url or ep.url(f"{ref.path}/blobs/{desc.digest}")
        attempts = self.retries + 1
        # One writer (one lock on the ingest) for all attempts; each attempt
        # continues at writer.offset.
        writer = store.writer(f"pull-{desc.digest}", expected=desc.digest, size=desc.size)
        if writer.exists:  # another pull stored it while we waited for the ref
            writer.close()
            return
        try:
            attempt = 0
            while writer.offset < desc.size:
                offset = writer.offset
                try:
                    self._stream_into(ep, url, ref, desc, writer, offset, progress)
                except _Retry as e:
                    attempt += 1
                    if attempt >= attempts:
                        raise RegistryUnavailable(
                            f"blob {desc.digest} from {ep.host}: {e} "
                            f"(after {attempts} attempts; the {writer.offset} bytes received "
                            "are kept and the next pull resumes them)"
                        ) from e
                    if progress:
                        progress(
                            Progress(
                                desc.digest, desc.media_type, "retrying", writer.offset, desc.size
                            )
                        )
                    self._sleep(attempt, attempts)
            writer.commit(desc.digest, desc.size)
        except (DigestMismatch, SizeMismatch):
            # Corrupt content: nothing of it may stay, not even as an ingest.
            _abort(writer)
            raise
        except BaseException:
            writer.close()  # keep what was received: the next attempt resumes it
            raise
        if progress:
            progress(Progress(desc.digest, desc.media_type, "done", desc.size, desc.size))

    def _stream_into(
        self,
        ep: Endpoint,
        url: str,
        ref: Reference,
        desc: Descriptor,
        writer: Writer,
        offset: int,
        progress: ProgressCallback | None,
    ) -> None:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._send(ep, "GET", url, [self._scope(ref)], headers=headers, stream=True)
        try:
            if resp.status_code == 416 and offset:
                # We have `offset` bytes and the registry has no more: the
                # descriptor promised a blob larger than the registry's. (The
                # body is not read: distribution sends a wrong Content-Length.)
                raise SizeMismatch(
                    f"blob {desc.digest}: the registry has only {offset} bytes, "
                    f"its descriptor says {desc.size}",
                    desc.digest,
                    expected=desc.size,
                    actual=offset,
                )
            if resp.status_code >= 400:
                self._raise_for(resp, f"blob {desc.digest} of {ref.domain}/{ref.path}")
            skip = 0
            if offset and resp.status_code != 206:
                skip = offset  # the server ignored the range: drop what we have
            elif offset:
                start = _content_range_start(resp.headers.get("content-range", ""))
                if start is not None and start != offset:
                    skip = offset - start if start < offset else -1
                    if skip < 0:
                        raise _Retry(f"asked for bytes {offset}-, the registry sent from {start}")
            done = offset
            try:
                for chunk in resp.iter_bytes():
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk = chunk[cut:]
                        skip -= cut
                        if not chunk:
                            continue
                    done += len(chunk)
                    if done > desc.size:
                        raise SizeMismatch(
                            f"blob {desc.digest}: the registry sent more than the "
                            f"{desc.size} bytes its descriptor says",
                            desc.digest,
                            expected=desc.size,
                            actual=done,
                        )
                    writer.write(chunk)
                    if progress:
                        progress(
                            Progress(desc.digest, desc.media_type, "downloading", done, desc.size)
                        )
            except httpx.TransportError as e:
                raise _Retry(f"connection lost at byte {done} of {desc.size}: {e}") from e
            if done < desc.size:
                raise _Retry(f"the stream ended at byte {done} of {desc.size}")
        finally:
            resp.close()

    # --- pull ------------------------------------------------------------------------

    def pull(
        self,
        ref: str | Reference,
        store: ContentStore,
        platform: Platform | str | None = None,
        progress: ProgressCallback | None = None,
    ) -> PulledImage:
        """Pull an image into ``store``; the platform's manifest is chosen from an index.

        Raises RegistryError (AuthenticationError, NotFoundError,
        RegistryUnavailable), ContentError (a digest or size mismatch) or
        ManifestError (schema1, no manifest for the platform). Nothing of a
        failed pull is visible but complete, verified blobs (and resumable
        ingests); manifests are stored only after everything they name.
        """
        r = parse_reference(ref) if isinstance(ref, str) else ref
        plat = parse_platform(platform) if isinstance(platform, str) else platform
        data, media_type, top_digest = self.fetch_manifest(r)
        parsed = parse_manifest(data, media_type or None)
        docs: list[tuple[bytes, str, str]] = [(data, top_digest, media_type)]
        index: Index | None = None
        if isinstance(parsed, Index):
            index = parsed
            chosen = select_manifest(parsed, plat if plat is not None else host_platform())
            by_digest = Reference(domain=r.domain, path=r.path, tag=None, digest=chosen.digest)
            data, media_type, digest = self._with_endpoints(
                r,
                lambda ep: self._manifest_from(ep, by_digest, chosen.digest, expected=chosen),
            )[1]
            media_type = media_type or chosen.media_type
            child = parse_manifest(data, media_type or chosen.media_type)
            if not isinstance(child, Manifest):
                raise ImageError(f"{chosen.digest}: an index inside an index is not supported")
            manifest = child
            docs.insert(0, (data, digest, media_type))
        else:
            manifest = parsed
        manifest_digest = docs[0][1]
        blobs = [manifest.config, *manifest.layers]
        self._fetch_all(r, blobs, store, progress)
        for doc, digest, _mt in docs:  # the chosen manifest, then the index
            self._store_bytes(store, doc, digest)
        return PulledImage(
            reference=r,
            digest=top_digest,
            manifest_digest=manifest_digest,
            manifest=manifest,
            config_digest=manifest.config.digest,
            layers=list(manifest.layers),
            index=index,
            media_type=docs[0][2],
        )

    def _fetch_all(
        self,
        ref: Reference,
        blobs: list[Descriptor],
        store: ContentStore,
        progress: ProgressCallback | None,
    ) -> None:
        unique = list({d.digest: d for d in blobs}.values())
        if len(unique) <= 1 or self.max_workers == 1:
            for d in unique:
                self.fetch_blob(ref, d, store, progress=progress)
            return
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(unique))) as pool:
            futures = [
                pool.submit(self.fetch_blob, ref, d, store, progress=progress) for d in unique
            ]
            first: BaseException | None = None
            for f in futures:
                try:
                    f.result()
                except BaseException as e:
                    if first is None:
                        first = e
            if first is not None:
                raise first

    @staticmethod
    def _store_bytes(store: ContentStore, data: bytes, digest: str) -> None:
        if not store.exists(digest):
            store.write_blob(data, expected=digest)

    # --- push ------------------------------------------------------------------------

    def push(
        self,
        ref: str | Reference,
        store: ContentStore,
        manifest_digest: str,
        *,
        mount_from: str | Reference | None = None,
        chunk_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Descriptor:
        """Push the manifest (or index) ``manifest_digest`` from ``store`` and all it names.

        The manifest is put by the reference's tag (by its digest when the
        reference has none). ``mount_from`` names a repository of the same
        registry to mount blobs from instead of uploading them;
        ``chunk_size`` uploads blobs in ``PATCH`` chunks of that size.
        """
        r = parse_reference(ref) if isinstance(ref, str) else ref
        src = parse_reference(mount_from) if isinstance(mount_from, str) else mount_from
        if src is not None and src.domain != r.domain:
            src = None  # a mount works only inside one registry
        desc = self._push_tree(r, store, manifest_digest, None, src, chunk_size, progress)
        if r.tag:
            self.put_manifest(r, store.read(manifest_digest), desc.media_type, r.tag)
        return desc

    def _push_tree(
        self,
        ref: Reference,
        store: ContentStore,
        digest: str,
        media_type: str | None,
        src: Reference | None,
        chunk_size: int | None,
        progress: ProgressCallback | None,
    ) -> Descriptor:
        data = store.read(digest)
        doc = parse_manifest(data, media_type)
        mt = media_type or _manifest_media_type(data, "")
        if isinstance(doc, Index):
            for child in doc.manifests:
                self._push_tree(
                    ref, store, child.digest, child.media_type, src, chunk_size, progress
                )
        else:
            # Foreign / non-distributable layers stay where their urls say, as in Docker.
            blobs = [doc.config, *(x for x in doc.layers if not _is_foreign(x))]
            for b in blobs:
                self.push_blob(
                    ref, store, b, mount_from=src, chunk_size=chunk_size, progress=progress
                )
        self.put_manifest(ref, data, mt, digest)
        return Descriptor(media_type=mt, digest=digest, size=len(data))

    def blob_exists(self, ref: str | Reference, digest: str) -> bool:
        """``HEAD /v2/<name>/blobs/<digest>``."""
        r = parse_reference(ref) if isinstance(ref, str) else ref
        ep = self.config.endpoints(r.domain, pull=False)[0]
        url = ep.url(f"{r.path}/blobs/{digest}")
        resp = self._send(ep, "HEAD", url, [self._scope(r, "pull,push")])
        if resp.status_code == 404:
            return False
        self._raise_for(resp, f"blob {digest} of {r.domain}/{r.path}")
        return True

    def push_blob(
        self,
        ref: str | Reference,
        store: ContentStore,
        desc: Descriptor,
        *,
        mount_from: Reference | None = None,
        chunk_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> str:
        """Upload one blob unless the registry has it: ``"exists"``, ``"mounted"`` or ``"uploaded"``."""
        r = parse_reference(ref) if isinstance(ref, str) else ref
        ep = self.config.endpoints(r.domain, pull=False)[0]
        scopes = [self._scope(r, "pull,push")]
        if self.blob_exists(r, desc.digest):
            if progress:
                progress(Progress(desc.digest, desc.media_type, "exists", desc.size, desc.size))
            return "exists"
        start = ep.url(f"{r.path}/blobs/uploads/")
        if mount_from is not None and mount_from.path != r.path:
            scopes.append(self._scope(mount_from, "pull"))
            query = urllib.parse.urlencode({"mount": desc.digest, "from": mount_from.path})
            start = f"{start}?{query}"
        resp = self._send(ep, "POST", start, scopes, headers={"Content-Length": "0"})
        if resp.status_code == 201:
            if progress:
                progress(Progress(desc.digest, desc.media_type, "mounted", desc.size, desc.size))
            return "mounted"
        self._raise_for(resp, f"upload of {desc.digest} to {r.domain}/{r.path}")
        if resp.status_code != 202:
            raise RegistryError(
                f"upload of {desc.digest}: HTTP {resp.status_code} (expected 202)",
                status=resp.status_code,
            )
        location = _location(resp, start)
        size = desc.size
        if chunk_size:
            offset = 0
            with store.open(desc.digest) as f:
                while offset < size:
                    piece = f.read(chunk_size)
                    if not piece:
                        break
                    end = offset + len(piece) - 1
                    resp = self._send(
                        ep,
                        "PATCH",
                        location,
                        scopes,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{end}",
                            "Content-Length": str(len(piece)),
                        },
                        content=piece,
                        retry=False,
                    )
                    self._raise_for(resp, f"upload of {desc.digest} (bytes {offset}-{end})")
                    location = _location(resp, location)
                    offset += len(piece)
                    if progress:
                        progress(Progress(desc.digest, desc.media_type, "uploading", offset, size))
            resp = self._send(
                ep,
                "PUT",
                _with_query(location, digest=desc.digest),
                scopes,
                headers={"Content-Length": "0"},
                retry=False,
            )
        else:
            path = store.path(desc.digest)

            def body() -> Iterator[bytes]:
                sent = 0
                with open(path, "rb") as f:
                    while piece := f.read(self.chunk_size):
                        sent += len(piece)
                        if progress:
                            progress(
                                Progress(desc.digest, desc.media_type, "uploading", sent, size)
                            )
                        yield piece

            resp = self._send(
                ep,
                "PUT",
                _with_query(location, digest=desc.digest),
                scopes,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=body,
                retry=False,
            )
        self._raise_for(resp, f"upload of {desc.digest} to {r.domain}/{r.path}")
        if progress:
            progress(Progress(desc.digest, desc.media_type, "done", size, size))
        return "uploaded"

    def put_manifest(self, ref: str | Reference, data: bytes, media_type: str, target: str) -> str:
        """``PUT /v2/<name>/manifests/<target>`` (a tag or digest); the digest the registry gave."""
        r = parse_reference(ref) if isinstance(ref, str) else ref
        ep = self.config.endpoints(r.domain, pull=False)[0]
        url = ep.url(f"{r.path}/manifests/{target}")
        resp = self._send(
            ep,
            "PUT",
            url,
            [self._scope(r, "pull,push")],
            headers={"Content-Type": media_type},
            content=data,
        )
        self._raise_for(resp, f"manifest {target} to {r.domain}/{r.path}")
        return str(resp.headers.get("docker-content-digest", ""))


# --- helpers ---------------------------------------------------------------------


def _manifest_media_type(data: bytes, header: str) -> str:
    """The media type of a manifest: its ``mediaType`` field, else the header, else guessed."""
    try:
        doc = json.loads(data)
    except ValueError:
        return header
    if isinstance(doc, dict):
        mt = doc.get("mediaType")
        if isinstance(mt, str) and mt:
            return mt
        if "manifests" in doc:
            return MEDIA_TYPE_OCI_INDEX
        if "layers" in doc or "config" in doc:
            return header if header in MANIFEST_MEDIA_TYPES else MEDIA_TYPE_OCI_MANIFEST
    return header


#: Distribution error codes of a 5xx that a retry may cure.
_TRANSIENT_CODES = frozenset({"UNKNOWN", "UNAVAILABLE", "TOOMANYREQUESTS"})


def _permanent(resp: httpx.Response) -> bool:
    """A 5xx whose body names only errors that are not transient."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        return False
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return False
    codes = {str(e.get("code", "")) for e in errors if isinstance(e, dict)}
    return bool(codes - _TRANSIENT_CODES)


def _is_foreign(desc: Descriptor) -> bool:
    """A layer that is not to be pushed: foreign (Docker) or non-distributable (OCI), with urls."""
    return bool(desc.urls) and (
        desc.media_type == MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP
        or ".nondistributable." in desc.media_type
    )


def _content_range_start(value: str) -> int | None:
    """``bytes 100-199/200`` → 100."""
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except (ValueError, IndexError):
        return None


def _location(resp: httpx.Response, base: str) -> str:
    loc = resp.headers.get("location")
    if not loc:
        raise RegistryError(f"upload: HTTP {resp.status_code} without a Location header")
    return str(urllib.parse.urljoin(base, loc))


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _abort(writer: Writer) -> None:
    try:
        writer.abort()
    except (OSError, ContentError):
        pass
