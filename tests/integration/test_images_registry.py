"""The registry client against Debian's docker-registry (the reference registry).

Every registry here is started by the fixtures of registry_fixtures.py on
127.0.0.1; failures a real registry will not produce on demand (a connection
cut mid-blob, a corrupt or oversized body, 500s) are injected by a transport
wrapped around httpx's own, between the client and the real registry.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.registry_fixtures import PASSWORD, USER, CuttingProxy, Registry

from bulkhead.errors import (
    AuthenticationError,
    DigestMismatch,
    NotFoundError,
    RegistryError,
    RegistryUnavailable,
    SizeMismatch,
)
from bulkhead.images.auth import Credentials, DockerCredentialStore
from bulkhead.images.content import ContentStore
from bulkhead.images.registry import Progress, RegistryClient, RegistryConfig
from bulkhead.oci.image_spec import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    digest_of,
    host_platform,
)

Factory = Callable[..., Registry]


# --- building images in a content store ----------------------------------------------


def make_layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def build_image(
    store: ContentStore,
    layers: list[bytes],
    *,
    arch: str = "amd64",
    variant: str | None = None,
    docker: bool = False,
) -> tuple[str, bytes]:
    """Store the layers, a config and a manifest; returns (manifest digest, manifest bytes)."""
    config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(gzip.decompress(x)) for x in layers]},
        "config": {"Cmd": ["/bin/sh"]},
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config).encode()
    store.write_blob(config_bytes)
    for layer in layers:
        store.write_blob(layer)
    layer_type = MEDIA_TYPE_DOCKER_LAYER_GZIP if docker else MEDIA_TYPE_OCI_LAYER_GZIP
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST,
        "config": desc(MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG, config_bytes),
        "layers": [desc(layer_type, x) for x in layers],
    }
    data = json.dumps(manifest, indent=2).encode()
    return store.write_blob(data), data


def build_index(
    store: ContentStore, entries: list[tuple[str, bytes, dict[str, str]]], *, docker: bool = False
) -> str:
    mt = MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST if docker else MEDIA_TYPE_OCI_INDEX,
        "manifests": [desc(mt, data, platform=plat) for _, data, plat in entries],
    }
    return store.write_blob(json.dumps(index).encode())


def sample_layers(n: int = 3, size: int = 50_000) -> list[bytes]:
    import random

    rnd = random.Random(n * 1000 + size)
    return [
        make_layer({f"dir{i}/file{j}": rnd.randbytes(size) for j in range(2)} | {f"l{i}": b"x"})
        for i in range(n)
    ]


@pytest.fixture
def src_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "src-store")


@pytest.fixture
def dst_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "dst-store")


def anon(**kw: Any) -> RegistryClient:
    kw.setdefault("backoff", 0.01)
    return RegistryClient(credentials=lambda host: None, **kw)


def blobs_of(store: ContentStore) -> set[str]:
    return {b.digest for b in store.walk()}


# --- fault injection ------------------------------------------------------------------


class _Stream(httpx.SyncByteStream):
    def __init__(
        self, inner: httpx.SyncByteStream, edit: Callable[[Iterator[bytes]], Iterator[bytes]]
    ):
        self._inner = inner
        self._edit = edit

    def __iter__(self) -> Iterator[bytes]:
        yield from self._edit(iter(self._inner))

    def close(self) -> None:
        self._inner.close()


class FaultTransport(httpx.BaseTransport):
    """httpx's transport, with faults for chosen requests.

    ``rule(request, count)`` is asked for each request (``count`` = how many
    earlier requests had the same method and path) and returns None (pass
    through), an int (answer that HTTP status), or a function editing the
    body's chunk iterator.
    """

    def __init__(self, rule: Callable[[httpx.Request, int], Any]):
        self._inner = httpx.HTTPTransport()
        self._rule = rule
        self._counts: dict[tuple[str, str], int] = {}
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        action = self._rule(request, count)
        if isinstance(action, httpx.Response):
            return action
        if isinstance(action, int):
            code = "UNAVAILABLE" if action >= 500 else "INJECTED"
            return httpx.Response(action, json={"errors": [{"code": code, "message": "x"}]})
        resp = self._inner.handle_request(request)
        if action is None:
            return resp
        assert isinstance(resp.stream, httpx.SyncByteStream)
        return httpx.Response(
            resp.status_code, headers=resp.headers, stream=_Stream(resp.stream, action)
        )

    def close(self) -> None:
        self._inner.close()


def cut_after(n: int) -> Callable[[Iterator[bytes]], Iterator[bytes]]:
    """Send ``n`` bytes, then the connection 'resets'."""

    def edit(chunks: Iterator[bytes]) -> Iterator[bytes]:
        sent = 0
        for c in chunks:
            if sent + len(c) >= n:
                yield c[: n - sent]
                raise httpx.ReadError("connection reset by peer (injected)")
            sent += len(c)
            yield c

    return edit


def truncate_after(n: int) -> Callable[[Iterator[bytes]], Iterator[bytes]]:
    """Send ``n`` bytes, then end the body cleanly (a server that closes early)."""

    def edit(chunks: Iterator[bytes]) -> Iterator[bytes]:
        sent = 0
        for c in chunks:
            if sent + len(c) >= n:
                yield c[: n - sent]
                return
            sent += len(c)
            yield c

    return edit


def flip_byte(chunks: Iterator[bytes]) -> Iterator[bytes]:
    first = True
    for c in chunks:
        if first and c:
            c = bytes([c[0] ^ 0xFF]) + c[1:]
            first = False
        yield c


def append_bytes(chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield from chunks
    yield b"extra bytes the descriptor does not count"


def is_blob(request: httpx.Request, digest: str | None = None) -> bool:
    path = request.url.path
    return (
        request.method == "GET" and "/blobs/" in path and (digest is None or path.endswith(digest))
    )


# --- push and pull --------------------------------------------------------------------


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-schema2"])
def test_push_then_pull_round_trip(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore, docker: bool
) -> None:
    layers = sample_layers(3)
    mdigest, mdata = build_image(src_store, layers, docker=docker)
    ref = registry.ref("test/app:v1")
    events: list[Progress] = []
    with anon() as client:
        pushed = client.push(ref, src_store, mdigest, progress=events.append)
        assert pushed.digest == mdigest
        assert {e.status for e in events} >= {"uploading", "done"}
        assert client.list_tags(registry.ref("test/app")) == ["v1"]
        resolved = client.resolve(ref)
        assert (resolved.digest, resolved.size) == (mdigest, len(mdata))
        assert resolved.media_type == (
            MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
        )

        pulled = client.pull(ref, dst_store, progress=events.append)
        assert pulled.manifest_digest == pulled.digest == mdigest
        assert pulled.index is None
        assert [x.digest for x in pulled.layers] == [digest_of(x) for x in layers]
        assert blobs_of(dst_store) == blobs_of(src_store)
        for d in blobs_of(src_store):
            assert dst_store.read(d) == src_store.read(d)
        assert dst_store.ingests() == []

        # A second pull finds every blob stored and downloads none.
        events.clear()
        client.pull(ref, dst_store, progress=events.append)
        assert {e.status for e in events} == {"exists"}

        # By digest, too.
        by_digest = client.pull(registry.ref(f"test/app@{mdigest}"), dst_store)
        assert by_digest.manifest_digest == mdigest


def test_push_chunked_mount_exists_and_by_digest(
    registry: Registry, src_store: ContentStore
) -> None:
    layers = sample_layers(2, size=300_000)
    mdigest, _ = build_image(src_store, layers)
    statuses: dict[str, list[str]] = {}

    def progress(p: Progress) -> None:
        statuses.setdefault(p.digest, []).append(p.status)

    with anon() as client:
        client.push(
            registry.ref("a/one:t"), src_store, mdigest, chunk_size=64 * 1024, progress=progress
        )
        big = digest_of(layers[0])
        assert statuses[big].count("uploading") >= len(layers[0]) // (64 * 1024)

        statuses.clear()
        client.push(registry.ref("a/one:t2"), src_store, mdigest, progress=progress)
        assert all(s == ["exists"] for s in statuses.values())

        statuses.clear()
        client.push(
            registry.ref("b/two:t"),
            src_store,
            mdigest,
            mount_from=registry.ref("a/one"),
            progress=progress,
        )
        assert all(s == ["mounted"] for s in statuses.values()), statuses

        # A reference without a tag: the manifest is put by digest only.
        client.push(registry.ref(f"c/three@{mdigest}"), src_store, mdigest)
        assert client.resolve(registry.ref(f"c/three@{mdigest}")).digest == mdigest
        # No tag: distribution 2.8 answers NAME_UNKNOWN for a repository without tags.
        try:
            assert client.list_tags(registry.ref("c/three")) == []
        except NotFoundError as e:
            assert e.code == "NAME_UNKNOWN"
        assert sorted(client.list_tags(registry.ref("a/one"))) == ["t", "t2"]


def test_index_host_platform_and_override(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    host = host_platform()
    other_arch = "arm64" if host.architecture != "arm64" else "amd64"
    host_digest, host_data = build_image(src_store, sample_layers(1), arch=host.architecture)
    other_digest, other_data = build_image(src_store, sample_layers(2, 1000), arch=other_arch)
    plat_host = {"os": "linux", "architecture": host.architecture}
    if host.variant:
        plat_host["variant"] = host.variant
    index = build_index(
        src_store,
        [
            (other_digest, other_data, {"os": "linux", "architecture": other_arch}),
            (host_digest, host_data, plat_host),
        ],
    )
    ref = registry.ref("multi/arch:latest")
    with anon() as client:
        client.push(ref, src_store, index)
        assert client.resolve(ref).media_type == MEDIA_TYPE_OCI_INDEX

        pulled = client.pull(ref, dst_store)
        assert pulled.digest == index
        assert pulled.manifest_digest == host_digest
        assert pulled.index is not None and len(pulled.index.manifests) == 2
        assert dst_store.exists(index) and dst_store.exists(host_digest)
        assert not dst_store.exists(other_digest)

        pulled = client.pull(ref, dst_store, platform=f"linux/{other_arch}")
        assert pulled.manifest_digest == other_digest
        assert dst_store.exists(other_digest)


def test_not_found(registry: Registry, dst_store: ContentStore) -> None:
    with anon() as client, pytest.raises(NotFoundError, match=r"MANIFEST_UNKNOWN|NAME_UNKNOWN"):
        client.pull(registry.ref("no/such:tag"), dst_store)
    assert blobs_of(dst_store) == set()


# --- auth -------------------------------------------------------------------------------


def docker_config(path: Path, host: str, user: str, password: str) -> DockerCredentialStore:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return DockerCredentialStore(str(path))


def test_basic_auth_htpasswd(
    registry_factory: Factory,
    tmp_path: Path,
    src_store: ContentStore,
    dst_store: ContentStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg = registry_factory("htpasswd")
    mdigest, _ = build_image(src_store, sample_layers(2, 1000))
    ref = reg.ref("private/img:1")
    # Credentials from config.json, found through DOCKER_CONFIG.
    docker_config(tmp_path / "docker", reg.host, USER, PASSWORD)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    with RegistryClient(backoff=0.01) as client:
        client.push(ref, src_store, mdigest)
        assert client.pull(ref, dst_store).manifest_digest == mdigest

    bad = docker_config(tmp_path / "bad", reg.host, USER, "wrong")
    with (
        RegistryClient(credentials=bad.get) as client,
        pytest.raises(AuthenticationError, match="wrong username or password"),
    ):
        client.resolve(ref)
    with anon() as client, pytest.raises(AuthenticationError, match="none is configured"):
        client.resolve(ref)


def test_bearer_token_flow(
    registry_factory: Factory, src_store: ContentStore, dst_store: ContentStore
) -> None:
    reg = registry_factory("token", anonymous_pull=True)
    assert reg.token_server is not None
    mdigest, _ = build_image(src_store, sample_layers(3, 2000))
    ref = reg.ref("tok/img:1")
    creds = Credentials(USER, PASSWORD)
    with RegistryClient(credentials=lambda h: creds if h == reg.host else None) as client:
        client.push(ref, src_store, mdigest)
    # One token per scope set, cached across the push's many requests.
    push_tokens = len(reg.token_server.requests)
    assert 1 <= push_tokens <= 3
    assert all(r["user"] for r in reg.token_server.requests)

    with anon() as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest
        # Anonymous tokens grant pull only: a push is refused.
        with pytest.raises(AuthenticationError):
            client.push(reg.ref("tok/other:1"), src_store, mdigest)
    anon_requests = reg.token_server.requests[push_tokens:]
    assert anon_requests and not any(r["user"] for r in anon_requests)

    wrong = Credentials(USER, "nope")
    with (
        RegistryClient(credentials=lambda h: wrong) as client,
        pytest.raises(AuthenticationError, match=r"token server .* refused user 'alice'"),
    ):
        client.pull(ref, dst_store)


# --- configuration: mirrors and insecure hosts -------------------------------------------


def test_mirror_tried_first_then_registry(
    registry_factory: Factory, src_store: ContentStore, tmp_path: Path
) -> None:
    upstream = registry_factory()
    mirror = registry_factory()
    mdigest, _ = build_image(src_store, sample_layers(2, 1000))
    other, _ = build_image(src_store, sample_layers(1, 500))
    with anon() as client:
        client.push(mirror.ref("lib/img:1"), src_store, mdigest)  # only the mirror has it
        client.push(upstream.ref("lib/img:2"), src_store, other)  # only upstream has it

    seen: list[str] = []
    transport = FaultTransport(lambda req, n: seen.append(str(req.url.netloc.decode())))
    config = RegistryConfig(mirrors={upstream.host: [mirror.url]})
    with anon(config=config, transport=transport) as client:
        store1 = ContentStore(tmp_path / "s1")
        assert client.pull(upstream.ref("lib/img:1"), store1).manifest_digest == mdigest
        assert upstream.host not in seen
        seen.clear()
        store2 = ContentStore(tmp_path / "s2")
        assert client.pull(upstream.ref("lib/img:2"), store2).manifest_digest == other
        assert seen[0] == mirror.host and upstream.host in seen
        # Pushes never go to a mirror.
        seen.clear()
        client.push(upstream.ref("lib/img:3"), src_store, mdigest)
        assert mirror.host not in seen


def test_insecure_and_loopback_use_plain_http() -> None:
    config = RegistryConfig(insecure={"registry.internal:5000", "bare.internal"})
    assert config.endpoints("registry.internal:5000")[0].base_url == "http://registry.internal:5000"
    assert config.endpoints("bare.internal:81")[0].base_url == "http://bare.internal:81"
    assert config.endpoints("other.internal:5000")[0].base_url == "https://other.internal:5000"
    assert config.endpoints("127.0.0.1:5000")[0].base_url == "http://127.0.0.1:5000"
    assert config.endpoints("localhost:5000")[0].base_url == "http://localhost:5000"
    assert config.endpoints("[::1]:5000")[0].base_url == "http://[::1]:5000"
    assert config.endpoints("docker.io")[0].base_url == "https://registry-1.docker.io"
    m = RegistryConfig(mirrors={"docker.io": ["https://mirror.example", "127.0.0.1:5001"]})
    eps = m.endpoints("docker.io")
    assert [(e.base_url, e.mirror) for e in eps] == [
        ("https://mirror.example", True),
        ("http://127.0.0.1:5001", True),
        ("https://registry-1.docker.io", False),
    ]
    assert [e.base_url for e in m.endpoints("docker.io", pull=False)] == [
        "https://registry-1.docker.io"
    ]


# --- faults: resume, corruption, lies, server errors -----------------------------------------


def pushed_image(
    registry: Registry, src_store: ContentStore, size: int = 400_000
) -> tuple[str, str, list[bytes]]:
    layers = sample_layers(2, size)
    mdigest, _ = build_image(src_store, layers)
    ref = registry.ref("faults/img:1")
    with anon() as client:
        client.push(ref, src_store, mdigest)
    return ref, mdigest, layers


def test_interrupted_pull_resumes_with_range(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, mdigest, layers = pushed_image(registry, src_store)
    big = digest_of(layers[0])
    half = len(layers[0]) // 2
    # Every download of the big layer is cut half-way, and no retries: the pull fails.
    t1 = FaultTransport(lambda req, n: cut_after(half) if is_blob(req, big) else None)
    with (
        anon(transport=t1, retries=0) as client,
        pytest.raises(RegistryUnavailable, match="resumes"),
    ):
        client.pull(ref, dst_store)
    assert not dst_store.exists(big)
    assert not dst_store.exists(mdigest)  # no manifest without its blobs
    (ingest,) = [i for i in dst_store.ingests() if i.expected == big]
    assert 0 < ingest.offset <= half

    # The next pull asks only for the rest.
    t2 = FaultTransport(lambda req, n: None)
    with anon(transport=t2) as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest
    ranges = [r.headers.get("range") for r in t2.requests if is_blob(r, big)]
    assert ranges == [f"bytes={ingest.offset}-"]
    assert dst_store.read(big) == layers[0]
    assert dst_store.ingests() == []


def test_connection_reset_and_truncated_body_retried_within_one_pull(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, mdigest, layers = pushed_image(registry, src_store)
    a, b = (digest_of(x) for x in layers)

    def rule(req: httpx.Request, n: int) -> Any:
        if is_blob(req, a) and n == 0:
            return cut_after(1000)
        if is_blob(req, b) and n == 0:
            return truncate_after(5000)
        return None

    t = FaultTransport(rule)
    with anon(transport=t) as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest
    assert [r.headers.get("range") for r in t.requests if is_blob(r, b)] == [None, "bytes=5000-"]
    assert dst_store.read(a) == layers[0] and dst_store.read(b) == layers[1]


def test_corrupt_blob_is_refused_and_nothing_stored(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, mdigest, layers = pushed_image(registry, src_store, 20_000)
    bad = digest_of(layers[1])
    t = FaultTransport(lambda req, n: flip_byte if is_blob(req, bad) else None)
    with anon(transport=t) as client, pytest.raises(DigestMismatch, match=bad):
        client.pull(ref, dst_store)
    assert not dst_store.exists(bad) and not dst_store.exists(mdigest)
    assert [i for i in dst_store.ingests() if i.expected == bad] == []
    with anon() as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest


def test_registry_sending_more_than_the_size(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, mdigest, layers = pushed_image(registry, src_store, 20_000)
    bad = digest_of(layers[0])
    t = FaultTransport(lambda req, n: append_bytes if is_blob(req, bad) else None)
    with anon(transport=t) as client, pytest.raises(SizeMismatch, match="more than"):
        client.pull(ref, dst_store)
    assert not dst_store.exists(bad) and not dst_store.exists(mdigest)
    with anon() as client:
        client.pull(ref, dst_store)


def test_manifest_digest_header_checked(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, _, _ = pushed_image(registry, src_store, 1000)

    def rule(req: httpx.Request, n: int) -> Any:
        return flip_byte if "/manifests/" in req.url.path and req.method == "GET" else None

    with (
        anon(transport=FaultTransport(rule)) as client,
        pytest.raises(DigestMismatch, match="Docker-Content-Digest"),
    ):
        client.pull(ref, dst_store)
    assert blobs_of(dst_store) == set()


def test_server_errors_retried_then_reported(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore, tmp_path: Path
) -> None:
    ref, mdigest, _ = pushed_image(registry, src_store, 1000)
    # Two 500s per blob, then the real answer: the pull succeeds.
    t = FaultTransport(lambda req, n: 500 if is_blob(req) and n < 2 else None)
    with anon(transport=t) as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest

    # Always 500: a clear error after the retries, nothing stored.
    store = ContentStore(tmp_path / "empty")
    t = FaultTransport(lambda req, n: 503 if is_blob(req) else None)
    with (
        anon(transport=t, retries=2) as client,
        pytest.raises(RegistryUnavailable, match=r"HTTP 503 UNAVAILABLE.*3 attempts"),
    ):
        client.pull(ref, store)
    assert blobs_of(store) == set()
    # A 401 without a challenge and a 404 are not retried.
    t = FaultTransport(lambda req, n: 404 if is_blob(req) else None)
    with anon(transport=t) as client, pytest.raises(NotFoundError, match="INJECTED"):
        client.pull(ref, store)
    blob_paths = [r.url.path for r in t.requests if is_blob(r)]
    assert len(blob_paths) == len(set(blob_paths)) == 3  # config and two layers, once each


@pytest.mark.parametrize("lie", [+1000, -1000], ids=["size-too-large", "size-too-small"])
def test_manifest_lying_about_a_layer_size(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore, lie: int
) -> None:
    ref, mdigest, layers = pushed_image(registry, src_store, 20_000)
    manifest = json.loads(src_store.read(mdigest))
    manifest["layers"][0]["size"] += lie
    data = json.dumps(manifest).encode()
    lying = registry.ref("faults/img:lying")
    with anon() as client:
        client.put_manifest(lying, data, MEDIA_TYPE_OCI_MANIFEST, "lying")
        with pytest.raises(SizeMismatch, match=digest_of(layers[0])):
            client.pull(lying, dst_store)
    bad = digest_of(layers[0])
    assert not dst_store.exists(bad) and not dst_store.exists(digest_of(data))
    assert [i for i in dst_store.ingests() if i.expected == bad] == []
    with anon() as client:  # the honest tag still pulls
        assert client.pull(ref, dst_store).manifest_digest == mdigest


def test_connection_dropped_mid_blob_by_a_proxy(
    registry: Registry,
    src_store: ContentStore,
    dst_store: ContentStore,
    cutting_proxy: Callable[..., CuttingProxy],
) -> None:
    """A real connection closed mid-body (a TCP proxy drops it), then a resumed pull."""
    _, mdigest, layers = pushed_image(registry, src_store, 400_000)
    proxy = cutting_proxy(registry.host, cut_after=300_000, cuts=1)
    ref = f"{proxy.host}/faults/img:1"
    with (
        anon(retries=0, max_workers=1) as client,
        pytest.raises(RegistryUnavailable, match="next pull resumes"),
    ):
        client.pull(ref, dst_store)
    assert proxy.cuts_done == 1
    partial = [i for i in dst_store.ingests() if i.offset > 0]
    assert len(partial) == 1 and not dst_store.exists(mdigest)

    # Cut twice more during the next pull: retried within it, each attempt
    # continuing where the last one stopped.
    proxy.cuts += 2
    proxy.sent.clear()
    with anon(max_workers=1) as client:
        assert client.pull(ref, dst_store).manifest_digest == mdigest
    assert proxy.cuts_done == 3
    assert f"bytes={partial[0].offset}-".encode() in proxy.sent.lower()
    for layer in layers:
        assert dst_store.read(digest_of(layer)) == layer
    assert dst_store.ingests() == []


def test_bearer_cross_repository_mount(
    registry_factory: Factory, src_store: ContentStore, dst_store: ContentStore
) -> None:
    """A mount needs a token for two repositories: push to the target, pull from the source."""
    reg = registry_factory("token")
    assert reg.token_server is not None
    mdigest, _ = build_image(src_store, sample_layers(2, 2000))
    creds = Credentials(USER, PASSWORD)
    statuses: list[str] = []
    with RegistryClient(credentials=lambda h: creds) as client:
        client.push(reg.ref("src/img:1"), src_store, mdigest)
        client.push(
            reg.ref("dst/img:1"),
            src_store,
            mdigest,
            mount_from=reg.ref("src/img"),
            progress=lambda p: statuses.append(p.status),
        )
        assert statuses and set(statuses) == {"mounted"}
        assert client.pull(reg.ref("dst/img:1"), dst_store).manifest_digest == mdigest
    scopes = [s for r in reg.token_server.requests for s in r["query"].get("scope", [])]
    assert "repository:src/img:pull" in scopes and "repository:dst/img:pull,push" in scopes


def test_foreign_layer_not_pushed_and_pulled_from_its_urls(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore, tmp_path: Path
) -> None:
    import functools
    import http.server
    import threading

    base, foreign = sample_layers(2, 3000)
    served = tmp_path / "served"
    served.mkdir()
    (served / "layer.tar.gz").write_bytes(foreign)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/layer.tar.gz"
        mdigest, mdata = build_image(src_store, [base, foreign], docker=True)
        manifest = json.loads(mdata)
        manifest["layers"][1]["mediaType"] = MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP
        manifest["layers"][1]["urls"] = [url]
        mdigest = src_store.write_blob(json.dumps(manifest).encode())
        ref = registry.ref("foreign/img:1")
        with anon() as client:
            client.push(ref, src_store, mdigest)
            assert not client.blob_exists(ref, digest_of(foreign))
            assert client.blob_exists(ref, digest_of(base))
            assert client.pull(ref, dst_store).manifest_digest == mdigest
        assert dst_store.read(digest_of(foreign)) == foreign
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_server_error_naming_a_permanent_problem_is_not_retried(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    ref, _, _ = pushed_image(registry, src_store, 1000)
    body = {"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]}

    def rule(req: httpx.Request, n: int) -> Any:
        return httpx.Response(500, json=body) if "/manifests/" in req.url.path else None

    t = FaultTransport(rule)
    with anon(transport=t) as client, pytest.raises(RegistryError) as info:
        client.pull(ref, dst_store)
    assert not isinstance(info.value, RegistryUnavailable)
    assert info.value.status == 500 and info.value.code == "MANIFEST_BLOB_UNKNOWN"
    assert len(t.requests) == 1


def test_concurrent_pulls_of_one_image_into_one_store(
    registry: Registry, src_store: ContentStore, dst_store: ContentStore
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ref, mdigest, layers = pushed_image(registry, src_store, 300_000)
    t = FaultTransport(lambda req, n: None)
    with anon(transport=t) as client, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: client.pull(ref, dst_store), range(3)))
    assert {r.manifest_digest for r in results} == {mdigest}
    for layer in layers:
        assert dst_store.read(digest_of(layer)) == layer
    # Each layer was downloaded once: the others waited for its ingest, then found it.
    for layer in layers:
        gets = [r for r in t.requests if is_blob(r, digest_of(layer))]
        assert len(gets) == 1
    assert dst_store.ingests() == []


def test_stalled_connection_times_out_and_is_retried(
    registry: Registry,
    src_store: ContentStore,
    dst_store: ContentStore,
    cutting_proxy: Callable[..., CuttingProxy],
) -> None:
    _, mdigest, layers = pushed_image(registry, src_store, 400_000)
    proxy = cutting_proxy(registry.host, cut_after=300_000, cuts=1, stall=True)
    with anon(timeout=0.5, max_workers=1) as client:
        pulled = client.pull(f"{proxy.host}/faults/img:1", dst_store)
    assert pulled.manifest_digest == mdigest and proxy.cuts_done == 1
    assert b"range: bytes=" in proxy.sent.lower()
    for layer in layers:
        assert dst_store.read(digest_of(layer)) == layer
