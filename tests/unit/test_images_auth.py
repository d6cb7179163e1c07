"""Registry auth without a registry: config.json, helpers, challenges, token cache."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulkhead.errors import AuthenticationError
from bulkhead.images.auth import (
    DOCKER_HUB_AUTH_KEY,
    Authenticator,
    Credentials,
    DockerCredentialStore,
    auth_key,
    parse_www_authenticate,
)


def write_config(d: Path, data: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(data))


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# --- config.json ------------------------------------------------------------------


def test_auths_base64_and_docker_hub_key(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "auths": {
                DOCKER_HUB_AUTH_KEY: {"auth": b64("hubuser:hub:pw")},
                "127.0.0.1:5000": {"auth": b64("local:pw2")},
            }
        },
    )
    store = DockerCredentialStore(str(tmp_path))
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert store.get(host) == Credentials("hubuser", "hub:pw")
    assert store.get("127.0.0.1:5000") == Credentials("local", "pw2")
    assert store.get("127.0.0.1:5001") is None
    assert store.get("example.org") is None


def test_auths_username_password_and_url_keys(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "auths": {
                "https://registry.example:5000/v1/": {"username": "u", "password": "p"},
                "other.example": {"identitytoken": "refresh-me"},
            }
        },
    )
    store = DockerCredentialStore(str(tmp_path))
    assert store.get("registry.example:5000") == Credentials("u", "p")
    assert store.get("other.example") == Credentials(identity_token="refresh-me")


def test_docker_config_env_and_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert DockerCredentialStore().get("docker.io") is None
    write_config(tmp_path / "cfg", {"auths": {"h:1": {"auth": b64("a:b")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    assert DockerCredentialStore().get("h:1") == Credentials("a", "b")


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AuthenticationError, match=r"cannot read .*config.json"):
        DockerCredentialStore(str(tmp_path)).get("h")
    write_config(tmp_path, {"auths": {"h": {"auth": b64("no-colon")}}})
    with pytest.raises(AuthenticationError, match="not user:password"):
        DockerCredentialStore(str(tmp_path)).get("h")


def test_auth_key() -> None:
    assert auth_key("docker.io") == DOCKER_HUB_AUTH_KEY
    assert auth_key("quay.io") == "quay.io"
    assert auth_key("127.0.0.1:5000") == "127.0.0.1:5000"


def test_cred_helpers_run_the_helper_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 3\n'
        "read server\n"
        'case "$server" in\n'
        '  h1) echo \'{"ServerURL":"h1","Username":"helped","Secret":"sec"}\' ;;\n'
        '  h2) echo \'{"ServerURL":"h2","Username":"<token>","Secret":"idtok"}\' ;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    write_config(
        tmp_path,
        {"credHelpers": {"h1": "fake", "h2": "fake", "h3": "fake"}, "auths": {"h4": {}}},
    )
    store = DockerCredentialStore(str(tmp_path))
    assert store.get("h1") == Credentials("helped", "sec")
    assert store.get("h2") == Credentials(identity_token="idtok")
    assert store.get("h3") is None  # "credentials not found": anonymous
    assert store.get("h4") is None  # an empty auths entry (what credsStore leaves)

    write_config(tmp_path, {"credsStore": "fake"})
    assert store.get("h1") == Credentials("helped", "sec")


def test_missing_helper_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    write_config(tmp_path, {"credsStore": "nonesuch"})
    with pytest.raises(AuthenticationError, match="docker-credential-nonesuch is not installed"):
        DockerCredentialStore(str(tmp_path)).get("docker.io")


# --- WWW-Authenticate -------------------------------------------------------------


def test_parse_www_authenticate() -> None:
    (ch,) = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push",
    }
    chs = parse_www_authenticate('Basic realm="a \\"quoted\\" realm", Bearer realm=x')
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].params["realm"] == 'a "quoted" realm'
    assert chs[1].params["realm"] == "x"
    assert parse_www_authenticate("") == []


# --- token flow (mock token server) ---------------------------------------------


class FakeTokenServer:
    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.expires_in: int | None = 300
        self.field = "token"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        body: dict[str, Any] = {self.field: f"tok{len(self.calls)}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if request.headers.get("authorization") == "Basic " + b64("bad:pw"):
            return httpx.Response(401, json={"details": "nope"})
        return httpx.Response(200, json=body)


CHALLENGE = 'Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull"'


def challenge_response() -> httpx.Response:
    return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})


def make(creds: Credentials | None = None, now: list[float] | None = None):
    server = FakeTokenServer()
    client = httpx.Client(transport=httpx.MockTransport(server))
    clock = now if now is not None else [1000.0]
    auth = Authenticator(client, lambda host: creds, clock=lambda: clock[0])
    return server, auth, clock


def test_bearer_anonymous_then_cached_per_scope() -> None:
    server, auth, clock = make()
    scopes = ["repository:a/b:pull"]
    assert auth.authorization("h", scopes) is None
    assert auth.handle_challenge("h", challenge_response(), scopes)
    assert auth.authorization("h", scopes) == "Bearer tok1"
    assert auth.authorization("h", scopes) == "Bearer tok1"
    assert len(server.calls) == 1
    q = server.calls[0].url.params
    assert q.get("service") == "svc"
    assert q.get_list("scope") == ["repository:a/b:pull"]
    assert "authorization" not in server.calls[0].headers
    # Another scope: a token of its own, fetched without a 401 first.
    assert auth.authorization("h", ["repository:c/d:pull,push"]) == "Bearer tok2"
    assert auth.authorization("h", scopes) == "Bearer tok1"
    # Expiry honoured: past expires_in (less the margin) a new token is fetched.
    clock[0] += 296
    assert auth.authorization("h", scopes) == "Bearer tok3"


def test_bearer_default_lifetime_and_access_token_field() -> None:
    server, auth, clock = make()
    server.expires_in = None
    server.field = "access_token"
    scopes = ["repository:a/b:pull"]
    auth.handle_challenge("h", challenge_response(), scopes)
    assert auth.authorization("h", scopes) == "Bearer tok1"
    clock[0] += 50
    assert auth.authorization("h", scopes) == "Bearer tok1"
    clock[0] += 10  # 60 s default lifetime
    assert auth.authorization("h", scopes) == "Bearer tok2"


def test_bearer_with_basic_credentials_and_refusal() -> None:
    server, auth, _ = make(Credentials("alice", "pw"))
    auth.handle_challenge("h", challenge_response(), ["repository:a/b:pull"])
    req = server.calls[0]
    assert req.headers["authorization"] == "Basic " + b64("alice:pw")
    assert req.url.params.get("account") == "alice"

    server, auth, _ = make(Credentials("bad", "pw"))
    with pytest.raises(AuthenticationError, match="refused user 'bad'"):
        auth.handle_challenge("h", challenge_response(), ["repository:a/b:pull"])


def test_refused_token_is_not_retried_forever() -> None:
    _, auth, _ = make()
    scopes = ["repository:a/b:pull"]
    assert auth.handle_challenge("h", challenge_response(), scopes)
    # The same challenge again for the token we just got: give up.
    assert not auth.handle_challenge("h", challenge_response(), scopes)


def test_identity_token_uses_oauth2_refresh_grant() -> None:
    server, auth, _ = make(Credentials(identity_token="refresh"))
    auth.handle_challenge("h", challenge_response(), ["repository:a/b:pull"])
    req = server.calls[0]
    assert req.method == "POST"
    form = dict(x.split("=", 1) for x in req.content.decode().split("&"))
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "refresh"
    assert form["service"] == "svc"


def test_basic_challenge() -> None:
    _, auth, _ = make(Credentials("alice", "pw"))
    resp = httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    assert auth.handle_challenge("h", resp, [])
    assert auth.authorization("h", []) == "Basic " + b64("alice:pw")
    # Refused again with these credentials: wrong password.
    with pytest.raises(AuthenticationError, match="wrong username or password"):
        auth.handle_challenge("h", resp, [])

    _, anon, _ = make(None)
    with pytest.raises(AuthenticationError, match="none is configured"):
        anon.handle_challenge("h", resp, [])
