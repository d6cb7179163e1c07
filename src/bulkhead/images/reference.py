"""Image references: ``busybox``, ``localhost:5000/team/app:1.2``, ``...@sha256:...``.

Vocabulary
----------
*reference*
    The name a user gives an image: ``[domain/]path[:tag][@digest]``.
*domain*
    The registry that holds the image, a host name or IP address with an
    optional port (``registry.example.com``, ``localhost:5000``,
    ``[::1]:5000``). Omitted, it is Docker Hub, ``docker.io``.
*path* (Docker: *remote name*)
    The repository within the registry, ``/``-separated lowercase
    components (``library/busybox``, ``team/app``). Docker Hub's official
    images live under ``library/``.
*repository*
    ``domain/path``: ``docker.io/library/busybox``.
*tag*
    A mutable name for one version of a repository, ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``.
    Omitted (and no digest given), it is ``latest``.
*digest*
    The content address of the manifest (or index), ``sha256:<64 hex>``:
    ``busybox@sha256:...`` names exactly one image, forever. A reference
    may have both a tag and a digest; the digest then decides what is pulled.
*normalised* / *familiar* form
    ``docker.io/library/busybox:latest`` is the normalised (full) form of
    the familiar ``busybox``: :func:`parse_reference` gives the first,
    :meth:`Reference.familiar` the second (what ``docker images`` shows).

The grammar and the normalisation are Docker's (``distribution/reference``):
a first component is a domain when it contains ``.`` or ``:``, is
``localhost``, or has uppercase letters (paths must be lowercase);
``index.docker.io`` is ``docker.io``; a one-component path on Docker Hub
gets ``library/``. Errors are :class:`~bulkhead.errors.InvalidReference`
with Docker's messages (``invalid reference format: repository name
(library/Busybox) must be lowercase``).
"""

from __future__ import annotations

import re

import msgspec

from bulkhead.errors import InvalidDigest, InvalidReference

#: The domain of Docker Hub in normalised references.
DEFAULT_DOMAIN = "docker.io"
#: Docker Hub's old name, normalised to :data:`DEFAULT_DOMAIN`.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
#: Where Docker Hub's registry API actually is.
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
#: The namespace of Docker Hub's official images.
OFFICIAL_REPO_PREFIX = "library/"
#: The tag of a reference that names none (and no digest).
DEFAULT_TAG = "latest"
#: The longest path (without the domain) a repository may have.
REPOSITORY_NAME_MAX = 255

# The grammar of distribution/reference's regexp.go, piece by piece.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH}"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
_NAME_RE = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})")
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_PREFIX = "invalid reference format"


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed, normalised image reference.

    ``domain`` (``docker.io``), ``path`` (``library/busybox``), ``tag``
    (``latest``, or ``None``) and ``digest`` (``sha256:...``, or ``None``).
    ``str()`` gives the full form, ``docker.io/library/busybox:latest``.
    Build one with :func:`parse_reference`; the constructor does not check.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``domain/path``: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def name(self) -> str:
        """The same as :attr:`repository` (Go's ``Name()``)."""
        return self.repository

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    def name_with_tag(self) -> str:
        """``repository:tag`` (``docker.io/library/busybox:latest``); the repository alone
        when the reference has no tag (it names a digest only)."""
        return f"{self.repository}:{self.tag}" if self.tag else self.repository

    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``team/app``, ``localhost:5000/x``.

        ``docker.io/`` is left out, and ``library/`` too when nothing
        follows it but one component (``library/a/b`` stays).
        """
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX):
            rest = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in rest:
                return rest
        return path

    def familiar(self) -> str:
        """The reference as Docker shows it: ``busybox:latest``, ``team/app@sha256:...``."""
        text = self.familiar_name()
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    def with_tag(self, tag: str) -> Reference:
        """This repository with ``tag`` (and the digest, if any)."""
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid tag format: {tag!r}", tag)
        return Reference(domain=self.domain, path=self.path, tag=tag, digest=self.digest)

    def with_digest(self, digest: str) -> Reference:
        """This repository with ``digest`` (and the tag, if any)."""
        _check_digest(digest, digest)
        return Reference(domain=self.domain, path=self.path, tag=self.tag, digest=digest)

    def without_tag(self) -> Reference:
        """The repository and digest alone (Docker's ``ParseDockerRef`` for ``name:tag@digest``)."""
        return Reference(domain=self.domain, path=self.path, digest=self.digest)

    def repository_only(self) -> Reference:
        """The repository alone, with neither tag nor digest."""
        return Reference(domain=self.domain, path=self.path)


def _check_digest(digest: str, text: str) -> None:
    """go-digest's checks of a reference's digest, with Docker's messages."""
    from bulkhead.oci.image_spec import validate_digest

    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(f"{_PREFIX}: invalid checksum digest format", text)
    try:
        validate_digest(digest)
    except InvalidDigest as exc:
        message = str(exc)
        if message.startswith("unsupported digest algorithm"):
            reason = "unsupported digest algorithm"
        elif message.startswith("invalid checksum digest length"):
            reason = "invalid checksum digest length"
        else:
            reason = "invalid checksum digest format"
        raise InvalidReference(f"{_PREFIX}: {reason}: {digest}", text) from None


def _split_docker_domain(name: str) -> tuple[str, str]:
    """Docker's ``splitDockerDomain``: (domain, rest) with the defaults applied."""
    maybe_domain, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == "localhost":
        domain, remote = maybe_domain, rest
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif "." in maybe_domain or ":" in maybe_domain or maybe_domain.lower() != maybe_domain:
        domain, remote = maybe_domain, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def _parse(text: str, original: str) -> Reference:
    """Docker's ``Parse``: the grammar, without normalisation."""
    if not text:
        raise InvalidReference(f"{_PREFIX}: repository name must have at least one component", "")
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.fullmatch(lowered):
            raise InvalidReference(f"{_PREFIX}: repository name must be lowercase", original)
        raise InvalidReference(_PREFIX, original)
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    name_match = _NAME_RE.fullmatch(name)
    assert name_match is not None  # the reference pattern contains the name pattern
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > REPOSITORY_NAME_MAX:
        raise InvalidReference(
            f"{_PREFIX}: repository name must not be more than {REPOSITORY_NAME_MAX} characters",
            original,
        )
    if digest is not None:
        _check_digest(digest, original)
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise a reference as ``docker pull`` does.

    ``busybox`` -> ``docker.io/library/busybox:latest``;
    ``library/busybox`` and ``index.docker.io/busybox`` -> the same;
    ``team/app`` -> ``docker.io/team/app:latest``;
    ``localhost:5000/x`` -> itself with ``:latest``;
    ``busybox@sha256:...`` keeps no tag; ``busybox:1@sha256:...`` keeps both.
    ``default_tag`` is what a reference with neither tag nor digest gets
    (``None``: nothing, for ``docker push --all-tags``-like uses).

    Raises :class:`~bulkhead.errors.InvalidReference`; a bare 64-digit hex
    string is refused as Docker refuses it (it is an image id, not a name).
    """
    if not isinstance(text, str):
        raise InvalidReference(f"{_PREFIX}: expected a string, not {type(text).__name__}")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings", text
        )
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference(f"{_PREFIX}: repository name ({remote}) must be lowercase", text)
    ref = _parse(f"{domain}/{remainder}", text)
    if ref.tag is None and ref.digest is None and default_tag is not None:
        ref = Reference(domain=ref.domain, path=ref.path, tag=default_tag)
    return ref


def is_image_id(text: str) -> bool:
    """Whether ``text`` is a full image id (64 hex digits, with or without ``sha256:``).

    Docker accepts these where a reference is expected (``docker run <id>``)
    and never parses them as names; callers check this first.
    """
    return bool(_IDENTIFIER_RE.fullmatch(text.removeprefix("sha256:")))


def valid_tag(tag: str) -> bool:
    """Whether ``tag`` is a valid tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    return bool(_TAG_RE.fullmatch(tag))
