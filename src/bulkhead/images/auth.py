"""Registry authentication: credentials, challenges and tokens.

A registry says how it wants to be authenticated in the ``WWW-Authenticate``
header of a ``401 Unauthorized`` answer. That header holds one or more
*challenges*; the two that registries use are

``Basic realm="..."``
    send the username and password with every request (RFC 7617);

``Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/busybox:pull"``
    ask the *token server* at ``realm`` for a token valid for ``service`` and
    the *scope(s)* the operation needs, then send ``Authorization: Bearer
    <token>`` (Docker's token authentication spec). The token server is asked
    with HTTP Basic credentials when we have some, anonymously otherwise; with
    an *identity token* (a refresh token that ``docker login`` stored instead
    of a password) it is asked by an OAuth2 ``POST`` with
    ``grant_type=refresh_token``.

A *scope* is ``repository:<path>:<actions>`` (``pull``, ``push`` or
``pull,push``). Tokens are cached per registry and scope set until they expire
(``expires_in`` seconds after ``issued_at``; 60 s when the server does not
say, as the spec prescribes).

*Credentials* come from Docker's client configuration,
``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json`` by default), the
file ``docker login`` writes:

- ``auths``: a map of registry keys to ``{"auth": base64("user:password")}``
  or ``{"username": ..., "password": ...}`` (and ``identitytoken``). Docker
  Hub's key is ``https://index.docker.io/v1/``; other registries are keyed by
  ``host[:port]`` (older clients wrote ``https://host/v1/``-style URLs, which
  are accepted as well).
- ``credHelpers`` (per registry) and ``credsStore`` (for all): the name of a
  *credential helper*, the program ``docker-credential-<name>``, which is
  run as ``docker-credential-<name> get`` with the server's key on its
  standard input and answers ``{"Username": ..., "Secret": ...}`` (a
  Username of ``<token>`` means Secret is an identity token).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bulkhead.errors import AuthenticationError

#: Docker Hub's key in config.json, whatever host name a reference uses.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
#: Names by which Docker Hub is reached; all use DOCKER_HUB_AUTH_KEY.
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: Seconds a token lives when the token server does not say (distribution's default).
DEFAULT_TOKEN_LIFETIME = 60
#: A token is renewed this many seconds before it expires.
TOKEN_EXPIRY_MARGIN = 5


@dataclass(frozen=True)
class Credentials:
    """What we authenticate with: a username and password, or an identity token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


# --- config.json -------------------------------------------------------------


def docker_config_dir() -> str:
    """``$DOCKER_CONFIG``, or ``~/.docker``."""
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".docker")


def auth_key(host: str) -> str:
    """The key under which Docker stores the credentials of ``host``."""
    return DOCKER_HUB_AUTH_KEY if host in DOCKER_HUB_HOSTS else host


def _key_to_host(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port`` (Docker's ConvertToHostname)."""
    stripped = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key)
    return stripped.split("/", 1)[0]


class DockerCredentialStore:
    """Looks up credentials in a Docker ``config.json`` and its helpers.

    ``config_dir`` defaults to :func:`docker_config_dir` (read at each lookup,
    so a test may set ``DOCKER_CONFIG``). A missing file means no credentials.
    ``helper_runner`` runs a credential helper (for tests); by default the
    ``docker-credential-<name>`` program on ``PATH``.
    """

    def __init__(
        self,
        config_dir: str | None = None,
        *,
        helper_runner: Callable[[str, str], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self._config_dir = config_dir
        self._helper_runner = helper_runner or run_credential_helper

    @property
    def path(self) -> str:
        return os.path.join(self._config_dir or docker_config_dir(), "config.json")

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise AuthenticationError(f"cannot read {self.path}: {e}") from e
        if not isinstance(data, dict):
            raise AuthenticationError(f"{self.path}: not a JSON object")
        return data

    def get(self, host: str) -> Credentials | None:
        """The credentials for registry ``host`` (``host[:port]``), or None."""
        data = self._load()
        key = auth_key(host)
        helpers = data.get("credHelpers") or {}
        helper = helpers.get(host) or helpers.get(key) if isinstance(helpers, dict) else None
        if not helper:
            helper = data.get("credsStore") or None
        if helper:
            answer = self._helper_runner(str(helper), key)
            if answer is not None:
                username = str(answer.get("Username", ""))
                secret = str(answer.get("Secret", ""))
                if username == "<token>":
                    return Credentials(identity_token=secret)
                if username or secret:
                    return Credentials(username, secret)
            # A helper without an entry: fall back to auths, as Docker does
            # for credHelpers-less hosts with plain entries.
        auths = data.get("auths") or {}
        if not isinstance(auths, dict):
            return None
        entry = auths.get(key)
        if entry is None:
            for k, v in auths.items():
                if _key_to_host(k) == host or (
                    key == DOCKER_HUB_AUTH_KEY and _key_to_host(k) in DOCKER_HUB_HOSTS
                ):
                    entry = v
                    break
        if not isinstance(entry, dict):
            return None
        return _entry_credentials(entry, self.path, key)


def _entry_credentials(entry: dict[str, Any], path: str, key: str) -> Credentials | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    identity = str(entry.get("identitytoken") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise AuthenticationError(f"{path}: auths[{key!r}].auth is not base64: {e}") from e
        if ":" not in decoded:
            raise AuthenticationError(f"{path}: auths[{key!r}].auth is not user:password")
        username, password = decoded.split(":", 1)
    if not (username or password or identity):
        return None
    return Credentials(username, password, identity)


def run_credential_helper(name: str, server: str) -> dict[str, Any] | None:
    """Run ``docker-credential-<name> get`` for ``server``; None when it has no entry."""
    program = f"docker-credential-{name}"
    exe = shutil.which(program)
    if exe is None:
        raise AuthenticationError(
            f"config.json names the credential helper {name!r}, "
            f"but {program} is not installed (not found on PATH)"
        )
    try:
        proc = subprocess.run(
            [exe, "get"], input=server.encode(), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AuthenticationError(f"{program} get: {e}") from e
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in out.lower():
            return None
        err = proc.stderr.decode(errors="replace").strip() or out
        raise AuthenticationError(f"{program} get failed (exit {proc.returncode}): {err}")
    try:
        answer = json.loads(out)
    except ValueError as e:
        raise AuthenticationError(f"{program} get: not JSON: {out[:200]!r}") from e
    if not isinstance(answer, dict):
        raise AuthenticationError(f"{program} get: not a JSON object")
    return answer


# --- challenges ----------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a scheme and its parameters."""

    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*,?')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into challenges (RFC 7235, quoted strings)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in " ,":
            pos += 1
        m = _SCHEME.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            p = _PARAM.match(header, pos)
            if not p:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
        challenges.append(Challenge(scheme, params))
    return challenges


# --- the authenticator -----------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Answers challenges and remembers what worked, per registry host.

    ``authorization(host, scopes)`` gives the header value to send first (a
    cached Bearer token for these scopes, or Basic when the host asked for
    it); ``handle_challenge(host, response, scopes)`` is called on a 401 and
    returns True when a new attempt is worth making. Thread-safe: the pull's
    worker threads share one.
    """

    def __init__(
        self,
        client: httpx.Client,
        credentials: Callable[[str], Credentials | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._schemes: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._creds_cache: dict[str, Credentials | None] = {}

    def credentials(self, host: str) -> Credentials | None:
        with self._lock:
            if host not in self._creds_cache:
                self._creds_cache[host] = self._credentials(host)
            return self._creds_cache[host]

    def authorization(self, host: str, scopes: Iterable[str]) -> str | None:
        key = (host, tuple(sorted(set(scopes))))
        with self._lock:
            challenge = self._schemes.get(host)
            token = self._tokens.get(key)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials(host)
            return creds.basic_header() if creds and creds.username else None
        if token is not None and token.expires > self._clock():
            return "Bearer " + token.value
        if token is not None or challenge.scheme == "bearer":
            # Expired, or another scope set on a host known to want tokens:
            # fetch one now rather than take a 401 first.
            return "Bearer " + self._fetch_token(host, challenge, key[1])
        return None

    def handle_challenge(self, host: str, response: httpx.Response, scopes: Iterable[str]) -> bool:
        """Learn from a 401; True if retrying with new authorization may succeed."""
        header = response.headers.get("www-authenticate", "")
        challenges = parse_www_authenticate(header)
        scope_key = tuple(sorted(set(scopes)))
        for ch in challenges:
            if ch.scheme == "bearer" and "realm" in ch.params:
                with self._lock:
                    known = self._schemes.get(host)
                    had = self._tokens.pop((host, scope_key), None)
                    self._schemes[host] = ch
                if had is not None and known == ch:
                    # The token we sent was refused: an insufficient scope or
                    # bad credentials; a new one will not do better.
                    return False
                self._fetch_token(host, ch, scope_key)
                return True
        for ch in challenges:
            if ch.scheme == "basic":
                with self._lock:
                    known = self._schemes.get(host)
                    self._schemes[host] = ch
                creds = self.credentials(host)
                if creds is None or not creds.username:
                    raise AuthenticationError(
                        f"{host} asks for a username and password, and none is configured "
                        "(docker login, or ~/.docker/config.json)"
                    )
                if known is not None and known.scheme == "basic":
                    raise AuthenticationError(
                        f"{host}: authentication failed for user {creds.username!r} "
                        "(wrong username or password)"
                    )
                return True
        return False

    def _fetch_token(self, host: str, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        realm = challenge.params["realm"]
        service = challenge.params.get("service")
        # Scopes of the challenge (what the registry says it needs) plus ours.
        wanted = set(scopes)
        if "scope" in challenge.params:
            wanted.update(challenge.params["scope"].split(" "))
        scope_list = sorted(s for s in wanted if s)
        creds = self.credentials(host)
        try:
            if creds is not None and creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "bulkhead",
                    "scope": " ".join(scope_list),
                }
                if service:
                    form["service"] = service
                resp = self._client.post(realm, data=form)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = []
                if service:
                    params.append(("service", service))
                params.extend(("scope", s) for s in scope_list)
                headers = {}
                if creds is not None and creds.username:
                    headers["Authorization"] = creds.basic_header()
                    params.append(("account", creds.username))
                resp = self._client.get(realm, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise AuthenticationError(f"token server {realm}: {e}") from e
        if resp.status_code in (401, 403):
            who = f"user {creds.username!r}" if creds and creds.username else "anonymous access"
            raise AuthenticationError(
                f"{host}: token server {realm} refused {who} "
                f"(HTTP {resp.status_code}): {resp.text[:200]}"
            )
        if resp.status_code != 200:
            raise AuthenticationError(
                f"{host}: token server {realm} answered HTTP {resp.status_code}: {resp.text[:200]}"
            )
        try:
            body = resp.json()
        except ValueError as e:
            raise AuthenticationError(f"{host}: token server {realm} did not answer JSON") from e
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"{host}: token server {realm} answered no token")
        lifetime = body.get("expires_in") or DEFAULT_TOKEN_LIFETIME
        try:
            lifetime = int(lifetime)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        # issued_at is the server's clock; our own now is what we can compare with.
        expires = self._clock() + max(lifetime - TOKEN_EXPIRY_MARGIN, 1)
        with self._lock:
            self._tokens[(host, scopes)] = _Token(value, expires)
        return value
