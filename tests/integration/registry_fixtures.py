"""A real registry for the tests: Debian's ``docker-registry`` on 127.0.0.1.

``registry_factory(auth=None | "htpasswd" | "token")`` starts the reference
distribution registry with a config.yml and a storage directory of its own
under the test's tmp dir, on a free loopback port, and stops it afterwards
(even when the test fails). With ``"htpasswd"`` it asks for HTTP Basic
credentials (a file made with ``htpasswd -B``); with ``"token"`` it trusts a
token server of the tests' own (:class:`TokenServer`, an ``http.server`` in a
thread that signs RS256 JWTs with a key and self-signed certificate made on
the fly), which is the Bearer flow Docker Hub uses. Nothing listens anywhere
but 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGISTRY_BIN = shutil.which("docker-registry")
USER = "alice"
PASSWORD = "s3cret-pw"
SERVICE = "bulkhead-test-registry"
ISSUER = "bulkhead-test-issuer"

needs_registry = pytest.mark.skipif(
    REGISTRY_BIN is None, reason="docker-registry is not installed (make test-deps)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """A token server: checks Basic credentials and signs the scopes asked for.

    ``users`` maps usernames to passwords; anonymous requests get ``pull``
    only when ``anonymous_pull``. ``requests`` records each query (for
    assertions on caching); ``expires_in`` is the lifetime it announces.
    """

    def __init__(self, workdir: Path, users: dict[str, str], *, anonymous_pull: bool = False):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.anonymous_pull = anonymous_pull
        self.expires_in = 300
        self.requests: list[dict[str, Any]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulkhead test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = 0
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def _grant(self, query: dict[str, list[str]], authz: str | None) -> tuple[int, dict[str, Any]]:
        account = None
        if authz:
            if not authz.startswith("Basic "):
                return 401, {"details": "basic credentials expected"}
            user, _, password = base64.b64decode(authz[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, {"details": "invalid username or password"}
            account = user
        elif not self.anonymous_pull:
            return 401, {"details": "authentication required"}
        access = []
        for scope in query.get("scope", []):
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = [a for a in actions.split(",") if a]
                allowed = wanted if account else [a for a in wanted if a == "pull"]
                access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": account or "",
            "aud": query.get("service", [SERVICE])[0],
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self.sign(claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
        return 200, {"token": token, "expires_in": self.expires_in, "issued_at": issued}

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                authz = self.headers.get("Authorization")
                server.requests.append({"query": query, "user": bool(authz)})
                status, body = server._grant(query, authz)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@dataclass
class Registry:
    """One running docker-registry: ``host`` is ``127.0.0.1:<port>``."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    auth: str | None
    token_server: TokenServer | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _config(root: Path, port: int, auth: str | None, token: TokenServer | None) -> str:
    cfg: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
        # Foreign layers' urls: only ones on loopback (distribution refuses all without a list).
        "validation": {"manifests": {"urls": {"allow": [r"^http://127\.0\.0\.1:[0-9]+/"]}}},
    }
    if auth == "htpasswd":
        cfg["auth"] = {"htpasswd": {"realm": "bulkhead-test", "path": str(root / "htpasswd")}}
    elif auth == "token":
        assert token is not None
        cfg["auth"] = {
            "token": {
                "realm": token.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(token.cert_path),
            }
        }
    # JSON is YAML.
    return json.dumps(cfg, indent=2)


def _wait_ready(reg: Registry, deadline: float) -> None:
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited {reg.process.returncode}: {reg.log()}")
        try:
            with urllib.request.urlopen(f"{reg.url}/v2/", timeout=1):
                return
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer on {reg.host}: {reg.log()}")


def start_registry(
    root: Path,
    auth: str | None = None,
    *,
    anonymous_pull: bool = False,
    started: list[Registry] | None = None,
) -> Registry:
    """Start docker-registry with its files under ``root`` (created); see the module doc.

    Each process started is appended to ``started`` at once, so that a caller's
    clean-up finds it even when it never became ready.
    """
    if REGISTRY_BIN is None:
        raise RuntimeError("docker-registry is not installed (make test-deps)")
    started = started if started is not None else []
    root.mkdir(parents=True)
    token = None
    if auth == "htpasswd":
        subprocess.run(
            ["htpasswd", "-Bbc", str(root / "htpasswd"), USER, PASSWORD],
            check=True,
            capture_output=True,
        )
    elif auth == "token":
        token = TokenServer(root, {USER: PASSWORD}, anonymous_pull=anonymous_pull)
        token.start()
    for _ in range(5):
        port = free_port()
        (root / "config.yml").write_text(_config(root, port, auth, token))
        log_path = root / "registry.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(root / "config.yml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)},
                start_new_session=True,
            )
        reg = Registry(f"127.0.0.1:{port}", root, proc, auth, token, log_path)
        started.append(reg)
        try:
            _wait_ready(reg, time.monotonic() + 15)
            return reg
        except RuntimeError:
            if proc.poll() is None or "address already in use" not in reg.log():
                raise
    raise RuntimeError("no free port for docker-registry")


def stop_registry(reg: Registry) -> None:
    """Stop the registry (and its token server) and remove its files."""
    if reg.process.poll() is None:
        reg.process.send_signal(signal.SIGTERM)
        try:
            reg.process.wait(10)
        except subprocess.TimeoutExpired:
            reg.process.kill()
            reg.process.wait()
    if reg.token_server is not None:
        reg.token_server.stop()
    shutil.rmtree(reg.root, ignore_errors=True)


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Start registries on demand; all are stopped and their files removed afterwards."""
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (make test-deps)")
    started: list[Registry] = []

    def start(auth: str | None = None, *, anonymous_pull: bool = False) -> Registry:
        root = tmp_path / f"registry-{len(started)}"
        return start_registry(root, auth, anonymous_pull=anonymous_pull, started=started)

    try:
        yield start
    finally:
        for reg in started:
            stop_registry(reg)


@pytest.fixture
def registry(registry_factory: Callable[..., Registry]) -> Registry:
    """A registry without authentication."""
    return registry_factory()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a registry that drops connections mid-answer.

    The first ``cuts`` connections whose answers pass ``cut_after`` bytes are
    closed right there (both ways, as a reset would), which httpx sees as the
    peer closing the connection in the middle of a body. ``sent`` keeps what
    clients sent (request lines and headers: to find ``Range:`` requests).
    """

    def __init__(
        self, upstream: str, cut_after: int, cuts: int = 1, *, stall: bool = False
    ) -> None:
        host, _, port = upstream.rpartition(":")
        #: Instead of closing the connection, stop forwarding (a stalled server).
        self.stall = stall
        self._stop_event = threading.Event()
        self._upstream = (host, int(port))
        self.cut_after = cut_after
        self.cuts = cuts
        self.cuts_done = 0
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for args in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                if downstream:
                    with self._lock:
                        cut = self.cuts_done < self.cuts and passed + len(data) > self.cut_after
                        if cut:
                            self.cuts_done += 1
                    if cut:
                        dst.sendall(data[: max(0, self.cut_after - passed)])
                        if self.stall:
                            self._stop_event.wait(30)
                        break
                    passed += len(data)
                else:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped = True
        self._stop_event.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:  # shutdown, not close: it wakes a thread blocked in recv
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for s in sockets:
            s.close()


@pytest.fixture
def cutting_proxy() -> Iterator[Callable[..., CuttingProxy]]:
    """Make CuttingProxy instances; all are stopped afterwards."""
    made: list[CuttingProxy] = []

    def make(upstream: str, cut_after: int, cuts: int = 1, *, stall: bool = False) -> CuttingProxy:
        proxy = CuttingProxy(upstream, cut_after, cuts, stall=stall)
        made.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for p in made:
            p.stop()
