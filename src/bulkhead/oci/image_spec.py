"""Typed models of the OCI image specification (v1.1) and Docker's manifest formats.

Vocabulary
----------
*blob*
    Bytes stored and fetched by their digest: a layer, an image config, a
    manifest. Registries and content stores know nothing else.
*digest*
    ``algorithm:encoded``, the hash of a blob's bytes, e.g.
    ``sha256:2cf24dba...`` (64 lowercase hex digits; ``sha512`` has 128).
    A blob is verified by hashing what was received and comparing.
*descriptor*
    A pointer to a blob: its media type, digest and size (and, in an index,
    the platform it is for). Everything in an image is linked by descriptors.
*media type*
    What a blob is: ``application/vnd.oci.image.manifest.v1+json``, a gzip
    layer, ... Docker's formats have media types of their own.
*manifest* (image manifest)
    One image for one platform: a descriptor of its *config* and the list of
    its *layers*, bottom first. Docker's "schema2" manifest has the same
    shape as the OCI one, with other media types.
*index* (Docker: *manifest list*)
    A list of manifest descriptors, each for one platform
    (``linux/amd64``, ``linux/arm64/v8``, ...): what ``busybox:latest``
    resolves to on Docker Hub. :func:`select_manifest` picks the one a host
    can run.
*image config*
    The JSON that says how to run the image (``Env``, ``Cmd``,
    ``Entrypoint``, ``User``, ...) and lists the *diff ids* of its layers.
*layer* / *diff id*
    A layer is a tar archive of filesystem changes, usually compressed. Its
    *diff id* is the digest of the *uncompressed* tar; the manifest lists
    the digests of the compressed blobs, the config the diff ids.
*chain id*
    The digest that names a stack of layers (a snapshot of the layers so far):
    ``ChainID(L0) = DiffID(L0)``, ``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``.
    Two images sharing their bottom layers share those chain ids, so their
    unpacked snapshots are shared too.
*platform*
    ``os/architecture[/variant]`` in Go's names (``linux/amd64``,
    ``linux/arm/v7``); see :func:`parse_platform` and :func:`host_platform`.
*schema1*
    Docker's first manifest format (signed JSON with ``fsLayers``). Docker
    removed support for it; so does bulkhead: :func:`parse_manifest` refuses
    it with :class:`~bulkhead.errors.Schema1Unsupported`.

Models
------
Every class is a :class:`msgspec.Struct` whose attributes are the
snake_case of the JSON keys they model: ``mediaType`` -> ``media_type``,
``os.version`` -> ``os_version``, ``diff_ids`` -> ``diff_ids``; the keys of
an image config's ``config`` object are PascalCase in the JSON
(``ExposedPorts`` -> ``exposed_ports``, ``WorkingDir`` -> ``working_dir``).
A field the specification calls OPTIONAL defaults to ``None`` and is left out
when encoding; unknown JSON members are ignored. Do not re-encode a manifest
or config to store or push it: its digest is of the bytes as received, and
encoding need not reproduce them. Keep the bytes, use the model to read.

Functions
---------
:func:`parse_manifest`      bytes -> :class:`Manifest` or :class:`Index`, by media type
:func:`parse_image_config`  bytes -> :class:`ImageConfig`
:func:`digest_of`           ``sha256:...`` of some bytes
:func:`validate_digest`     check ``algorithm:hex`` (lengths, supported algorithms)
:func:`chain_ids`           the chain ids of a list of diff ids
:func:`host_platform`       this machine's platform (``os.uname`` in Go's names)
:func:`parse_platform`      ``"linux/arm64/v8"`` -> :class:`Platform`
:func:`normalize_platform`  containerd's normalisation (``aarch64`` -> ``arm64``)
:func:`platform_matches`    does an image's platform run on the wanted one
:func:`select_manifest`     the best descriptor of an index for a platform
"""

# No ``from __future__ import annotations``: msgspec then gets the types as objects.
import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import field

from bulkhead.errors import (
    InvalidDigest,
    ManifestError,
    PlatformNotFound,
    Schema1Unsupported,
    UnsupportedMediaType,
)

# --- media types --------------------------------------------------------------

MEDIA_TYPE_OCI_DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
MEDIA_TYPE_OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Deprecated by image-spec 1.1 but still found in the wild (Windows base layers).
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP = MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE + "+gzip"
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD = MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE + "+zstd"

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

#: Media types of image manifests (one image, one platform).
MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
#: Media types of indexes / manifest lists (one entry per platform).
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
#: Media types of image configs.
CONFIG_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})
#: Docker's removed schema1 manifests.
SCHEMA1_MEDIA_TYPES = frozenset(
    {MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST}
)
#: Layer media types and the compression of their blobs (``None``: a plain tar).
LAYER_MEDIA_TYPES: dict[str, str | None] = {
    MEDIA_TYPE_OCI_LAYER: None,
    MEDIA_TYPE_OCI_LAYER_GZIP: "gzip",
    MEDIA_TYPE_OCI_LAYER_ZSTD: "zstd",
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE: None,
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
    MEDIA_TYPE_DOCKER_LAYER: None,
    MEDIA_TYPE_DOCKER_LAYER_GZIP: "gzip",
    MEDIA_TYPE_DOCKER_LAYER_ZSTD: "zstd",
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}
#: What a registry client sends as ``Accept`` for a manifest, most wanted first.
MANIFEST_ACCEPT: tuple[str, ...] = (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
)
#: Annotation naming the tag of a manifest in an OCI layout's ``index.json``.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
#: Annotation Docker's containerd image store reads for the full image name.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


def layer_compression(media_type: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or ``None`` for a layer media type.

    Raises :class:`UnsupportedMediaType` for a media type that is not a layer
    (an encrypted layer, an artifact, a typo).
    """
    try:
        return LAYER_MEDIA_TYPES[media_type]
    except KeyError:
        raise UnsupportedMediaType(
            f"unsupported layer media type {media_type!r}", media_type
        ) from None


def is_layer_media_type(media_type: str) -> bool:
    """Whether a descriptor of this media type is a filesystem layer bulkhead can apply."""
    return media_type in LAYER_MEDIA_TYPES


# --- digests -----------------------------------------------------------------

#: Digest algorithms bulkhead computes, and the length of their hex encoding.
DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

# The image spec's grammar: algorithm-component ([+._-] algorithm-component)* ":" encoded
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_RE = re.compile(r"[a-f0-9]+")


def validate_digest(text: str) -> str:
    """Check that ``text`` is a digest of a supported algorithm and return it.

    The rules are go-digest's (what Docker and containerd use): the image
    spec's ``algorithm:encoded`` grammar, an algorithm bulkhead implements
    (sha256, sha384, sha512), and exactly as many *lowercase* hex digits as
    that algorithm gives. Content stores build paths from digests, so this
    is also what keeps ``sha256:../../etc`` out of them.

    Raises :class:`~bulkhead.errors.InvalidDigest` naming what is wrong.
    """
    if not isinstance(text, str) or not _DIGEST_RE.fullmatch(text):
        raise InvalidDigest(f"invalid checksum digest format: {text!r}", None)
    algorithm, _, encoded = text.partition(":")
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} in {text!r}", None)
    if len(encoded) != length:
        raise InvalidDigest(
            f"invalid checksum digest length: {algorithm} needs {length} hex digits, "
            f"{text!r} has {len(encoded)}",
            None,
        )
    if not _HEX_RE.fullmatch(encoded):
        raise InvalidDigest(
            f"invalid checksum digest format: {text!r} (lowercase hex expected)", None
        )
    return text


def digest_of(data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> str:
    """The digest (``algorithm:hex``) of ``data``; ``algorithm`` is sha256, sha384 or sha512."""
    if algorithm not in DIGEST_ALGORITHMS:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}", None)
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain id of each layer stack ``diff_ids[:1]``, ``diff_ids[:2]``, ...

    As the image spec defines it: the first chain id is the first diff id;
    each next one is the sha256 of the previous chain id, a space and the
    next diff id (``"sha256:aaa... sha256:bbb..."``, ASCII). The last one
    names the whole image's unpacked filesystem.
    """
    result: list[str] = []
    for diff_id in diff_ids:
        validate_digest(diff_id)
        if not result:
            result.append(diff_id)
        else:
            result.append(digest_of(f"{result[-1]} {diff_id}".encode("ascii")))
    return result


# --- models ------------------------------------------------------------------


class _Model(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Base of the camelCase models (descriptor, manifest, index)."""


class Platform(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The platform an image runs on, as in an index's descriptors.

    ``architecture`` and ``os`` use Go's ``GOARCH``/``GOOS`` names
    (``amd64``, ``arm64``, ``linux``); ``variant`` the CPU variant
    (``v7`` for 32-bit arm, ``v8`` for arm64). ``os_version`` and
    ``os_features`` matter for Windows images only. ``features`` is a
    field Docker's manifest lists have (the OCI spec reserves it).
    """

    architecture: str
    os: str
    os_version: str | None = field(default=None, name="os.version")
    os_features: list[str] | None = field(default=None, name="os.features")
    variant: str | None = None
    features: list[str] | None = None

    def __str__(self) -> str:
        return format_platform(self)


class Descriptor(_Model, kw_only=True):
    """A pointer to a blob: what it is (media type), its digest and size.

    ``urls`` are places it may also be fetched from (foreign layers),
    ``data`` the blob itself when embedded (base64 in the JSON, bytes here),
    ``platform`` what an index entry is for, ``artifact_type`` the type of
    an artifact manifest it points to.
    """

    media_type: str
    digest: str
    size: int
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    data: bytes | None = None
    platform: Platform | None = None
    artifact_type: str | None = None


class Manifest(_Model, kw_only=True):
    """An image manifest: OCI (``application/vnd.oci.image.manifest.v1+json``)
    or Docker schema2 (``application/vnd.docker.distribution.manifest.v2+json``).

    ``config`` points at the image config, ``layers`` at the layer blobs,
    bottom first. ``subject`` (OCI 1.1) links an artifact such as a signature
    to the manifest it is about; ``artifact_type`` says what artifact this is.
    """

    schema_version: int
    media_type: str | None = None
    artifact_type: str | None = None
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class Index(_Model, kw_only=True):
    """An index (OCI) or manifest list (Docker): one manifest descriptor per platform."""

    schema_version: int
    media_type: str | None = None
    artifact_type: str | None = None
    manifests: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class HealthConfig(msgspec.Struct, kw_only=True, omit_defaults=True, rename="pascal"):
    """Docker's ``Healthcheck`` of an image config; durations are nanoseconds.

    ``test`` is ``["NONE"]``, ``["CMD", arg...]`` or ``["CMD-SHELL", command]``;
    an empty list means "inherit".
    """

    test: list[str] | None = None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


class ContainerConfig(msgspec.Struct, kw_only=True, omit_defaults=True, rename="pascal"):
    """The ``config`` object of an image config: defaults for containers of the image.

    The JSON keys are PascalCase (``User``, ``Env``, ``Entrypoint``,
    ``Cmd``, ``WorkingDir``, ``ExposedPorts``, ``Volumes``, ``Labels``,
    ``StopSignal``, ``ArgsEscaped``); Docker adds ``Healthcheck``,
    ``OnBuild``, ``Shell`` and ``StopTimeout``. ``exposed_ports`` and
    ``volumes`` are sets in Go, objects with empty values in JSON
    (``{"80/tcp": {}}``).
    """

    user: str | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool | None = None
    healthcheck: HealthConfig | None = None
    on_build: list[str] | None = None
    shell: list[str] | None = None
    stop_timeout: int | None = None


class RootFS(msgspec.Struct, kw_only=True):
    """The image's layers by their diff ids (digests of the uncompressed tars), bottom first.

    Both members are REQUIRED in the JSON, so both are always encoded.
    """

    type: str = "layers"
    diff_ids: list[str] = field(default_factory=list)


class History(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step of the image's build. ``empty_layer`` steps (ENV, CMD, ...) made no layer."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An image config (OCI ``application/vnd.oci.image.config.v1+json``, Docker's
    ``application/vnd.docker.container.image.v1+json`` is the same document).

    Its digest is the image's id (``docker images --no-trunc``).
    """

    created: str | None = None
    author: str | None = None
    architecture: str
    os: str
    os_version: str | None = field(default=None, name="os.version")
    os_features: list[str] | None = field(default=None, name="os.features")
    variant: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS
    history: list[History] | None = None

    def platform(self) -> Platform:
        """The platform this image is for."""
        return Platform(
            architecture=self.architecture,
            os=self.os,
            os_version=self.os_version,
            os_features=self.os_features,
            variant=self.variant,
        )


# --- parsing -----------------------------------------------------------------


class _Probe(msgspec.Struct, rename="camel"):
    """The members that tell what kind of document a manifest is."""

    schema_version: Any = None
    media_type: Any = None
    manifests: msgspec.Raw = msgspec.Raw()
    layers: msgspec.Raw = msgspec.Raw()
    config: msgspec.Raw = msgspec.Raw()
    fs_layers: msgspec.Raw = msgspec.Raw()


def _present(raw: msgspec.Raw) -> bool:
    """Whether a probed member was in the document (and not ``null``)."""
    return len(raw) > 0 and bytes(raw) != b"null"


_SCHEMA1_MESSAGE = (
    "schema1 manifests ({media_type}) are not supported: Docker removed them; "
    "re-push the image with a current client"
)
_GENERIC_MEDIA_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})


def _bare_media_type(media_type: str) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return media_type.split(";", 1)[0].strip().lower()


def _check_descriptor(desc: Descriptor, where: str) -> None:
    try:
        validate_digest(desc.digest)
    except InvalidDigest as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if desc.size < 0:
        raise ManifestError(f"{where}: negative size {desc.size}")


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or index, of the kind its media type says.

    ``media_type`` is what the bytes were served or stored as (a registry's
    ``Content-Type``, a descriptor's ``mediaType``); without it, or when it
    is a generic ``application/json``, the document's own ``mediaType`` and
    ``schemaVersion`` decide, and then its members (``manifests`` makes an
    index, ``layers``/``config`` a manifest).

    Refused, with the reason:

    * schema1 manifests (:class:`~bulkhead.errors.Schema1Unsupported`);
    * media types that are neither a manifest nor an index
      (:class:`~bulkhead.errors.UnsupportedMediaType`, naming it);
    * a document whose ``mediaType`` contradicts the one it was served as,
      or that has both ``manifests`` and ``layers``/``config``: the
      ambiguity behind CVE-2021-41190, where one blob read as an index by
      one client and as a manifest by another;
    * ``schemaVersion`` other than 2, malformed JSON, missing required
      members, malformed digests, negative sizes
      (:class:`~bulkhead.errors.ManifestError`).
    """
    try:
        probe = msgspec.json.decode(data, type=_Probe)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ManifestError(f"manifest is not a JSON object: {exc}") from None

    given = _bare_media_type(media_type) if media_type is not None else ""
    own = probe.media_type if isinstance(probe.media_type, str) else None
    if probe.media_type is not None and own is None:
        raise ManifestError(f"manifest mediaType must be a string, not {probe.media_type!r}")

    for candidate in (given, own or ""):
        if candidate in SCHEMA1_MEDIA_TYPES:
            raise Schema1Unsupported(_SCHEMA1_MESSAGE.format(media_type=candidate), candidate)
    if probe.schema_version == 1 or _present(probe.fs_layers):
        raise Schema1Unsupported(
            _SCHEMA1_MESSAGE.format(media_type=MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST),
            MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
        )

    known = MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES
    if given and given not in _GENERIC_MEDIA_TYPES and given not in known:
        raise UnsupportedMediaType(
            f"unsupported manifest media type {given!r}: bulkhead reads "
            + ", ".join(sorted(known)),
            given,
        )
    if own is not None and own not in known:
        raise UnsupportedMediaType(
            f"unsupported manifest media type {own!r}: bulkhead reads " + ", ".join(sorted(known)),
            own,
        )
    if given in known and own is not None and own != given:
        raise ManifestError(f"manifest says its mediaType is {own!r} but was served as {given!r}")

    effective = given if given in known else own
    if effective is None:
        if _present(probe.manifests):
            effective = MEDIA_TYPE_OCI_INDEX
        elif _present(probe.layers) or _present(probe.config):
            effective = MEDIA_TYPE_OCI_MANIFEST
        else:
            raise ManifestError(
                "cannot tell what kind of manifest this is: no mediaType, manifests or layers"
            )

    if probe.schema_version != 2:
        raise ManifestError(f"unsupported manifest schemaVersion {probe.schema_version!r}, want 2")

    result: Manifest | Index
    try:
        if effective in INDEX_MEDIA_TYPES:
            if _present(probe.layers) or _present(probe.config):
                raise ManifestError(
                    f"ambiguous manifest: a {effective} must not have layers or config"
                )
            result = msgspec.json.decode(data, type=Index)
        else:
            if _present(probe.manifests):
                raise ManifestError(f"ambiguous manifest: a {effective} must not have manifests")
            result = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"invalid {effective}: {exc}") from None

    if isinstance(result, Index):
        for i, desc in enumerate(result.manifests):
            _check_descriptor(desc, f"$.manifests[{i}]")
    else:
        _check_descriptor(result.config, "$.config")
        for i, desc in enumerate(result.layers):
            _check_descriptor(desc, f"$.layers[{i}]")
    if result.subject is not None:
        _check_descriptor(result.subject, "$.subject")
    return result


def parse_image_config(data: bytes) -> ImageConfig:
    """Parse an image config (OCI or Docker); :class:`~bulkhead.errors.ManifestError` if bad.

    The diff ids must be valid digests: they become snapshot and path names.
    """
    try:
        config = msgspec.json.decode(data, type=ImageConfig)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"image config is not valid JSON: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ManifestError(f"invalid image config: {exc}") from None
    for i, diff_id in enumerate(config.rootfs.diff_ids):
        try:
            validate_digest(diff_id)
        except InvalidDigest as exc:
            raise ManifestError(f"$.rootfs.diff_ids[{i}]: {exc}") from None
    return config


def encode(model: msgspec.Struct) -> bytes:
    """Serialize a model to compact JSON (what bulkhead writes when it makes a manifest)."""
    return msgspec.json.encode(model)


def media_type_of(document: Manifest | Index) -> str:
    """The media type of a parsed document: its own ``mediaType`` or the OCI default for its kind."""
    if document.media_type:
        return document.media_type
    return MEDIA_TYPE_OCI_INDEX if isinstance(document, Index) else MEDIA_TYPE_OCI_MANIFEST


# --- platforms ---------------------------------------------------------------

# uname machine -> (GOARCH, variant)
_MACHINES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "i386": ("386", None),
    "i486": ("386", None),
    "i586": ("386", None),
    "i686": ("386", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5tejl": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "loongarch64": ("loong64", None),
    "mips64": ("mips64le", None),
    "mips": ("mipsle", None),
}

_KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
_SPECIFIER_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OS_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")


def machine_platform(machine: str, system: str = "Linux") -> Platform:
    """The platform of a kernel's ``uname`` machine and system names, in Go's terms.

    ``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64`` (variant ``v8``),
    ``armv7l`` -> ``arm`` ``v7``, ``i686`` -> ``386``; a name not in the
    table is kept, lowercased.
    """
    arch, variant = _MACHINES.get(machine.lower(), (machine.lower(), None))
    return Platform(architecture=arch, os=system.lower(), variant=variant)


def host_platform() -> Platform:
    """This machine's platform, as Docker names it (``linux/amd64``, ``linux/arm64/v8``)."""
    uname = os.uname()
    return machine_platform(uname.machine, uname.sysname)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize_platform(platform: Platform) -> Platform:
    """containerd's normalisation: the canonical form two platforms are compared in.

    Lowercases; ``macos`` -> ``darwin``; ``x86_64``/``x86-64`` -> ``amd64``
    (variant ``v1`` dropped); ``aarch64`` -> ``arm64`` (variant ``v8``, the
    default, dropped); ``i386`` -> ``386``; ``armhf`` -> ``arm/v7``;
    ``armel`` -> ``arm/v6``; ``arm`` without a variant -> ``arm/v7``;
    ``os.features`` sorted and deduplicated.
    """
    os_name = platform.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = _normalize_arch(platform.architecture, platform.variant or "")
    features = sorted(set(platform.os_features)) if platform.os_features else None
    return Platform(
        architecture=arch,
        os=os_name,
        os_version=platform.os_version,
        os_features=features,
        variant=variant or None,
        features=platform.features,
    )


def format_platform(platform: Platform) -> str:
    """``os/architecture[/variant]``, e.g. ``linux/arm64/v8``."""
    parts = [platform.os or "unknown", platform.architecture]
    if platform.variant:
        parts.append(platform.variant)
    return "/".join(p for p in parts if p)


def parse_platform(specifier: str) -> Platform:
    """Parse a platform specifier the way ``docker --platform`` (containerd) does.

    Forms: ``os/arch/variant``, ``os/arch``, ``os`` (this machine's
    architecture) or ``arch`` (this machine's OS); the OS may carry a
    version, ``windows(10.0.17763)``. Names are normalised (``aarch64`` ->
    ``arm64``, ``x86_64`` -> ``amd64``); ``linux/arm64/v8`` keeps its
    variant, ``linux/arm64`` has none (v8 is implied), ``linux/arm`` means
    v7. Raises :class:`ValueError` with the reason for anything else.
    """
    if "*" in specifier:
        raise ValueError(f"invalid platform {specifier!r}: wildcards are not supported")
    if not specifier:
        raise ValueError("invalid platform '': expected os[/arch[/variant]], e.g. linux/amd64")
    parts = specifier.split("/")
    if len(parts) > 3:
        raise ValueError(
            f"invalid platform {specifier!r}: expected os[/arch[/variant]], e.g. linux/arm64/v8"
        )
    match = _OS_RE.fullmatch(parts[0])
    if match is None:
        raise ValueError(
            f"invalid platform {specifier!r}: {parts[0]!r} is not an operating system name"
        )
    for part in parts[1:]:
        if not _SPECIFIER_RE.fullmatch(part):
            raise ValueError(
                f"invalid platform {specifier!r}: {part!r} may only have letters, digits, '_', '.' and '-'"
            )
    os_name = match.group(1).lower()
    if os_name == "macos":
        os_name = "darwin"
    os_version = match.group(2) or None
    os_features = [f for f in (match.group(3) or "").split("+") if f] or None

    if len(parts) == 1:
        host = host_platform()
        if os_name in _KNOWN_OS:
            variant = host.variant if host.architecture == "arm" and host.variant != "v7" else None
            return Platform(
                architecture=host.architecture,
                os=os_name,
                os_version=os_version,
                os_features=os_features,
                variant=variant,
            )
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform(architecture=arch, os=host.os, variant=variant or None)
        raise ValueError(
            f"invalid platform {specifier!r}: unknown operating system or architecture"
        )
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
    else:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
    return Platform(
        architecture=arch,
        os=os_name,
        os_version=os_version,
        os_features=os_features,
        variant=variant or None,
    )


def _platform_vector(platform: Platform) -> list[Platform]:
    """The platforms that run on ``platform`` (normalised), most preferred first.

    containerd's ``platforms.Only``: amd64/vN also runs vN-1 ... v1 and 386;
    arm/vN runs arm/vN-1 ... v5; arm64/v8.x runs arm64/v8.(x-1) ... v8, and
    arm/v8 ... v5; arm64/v9.x runs v9.(x-1) ... v9 and v8.(x+5) ... v8.
    """

    def like(arch: str, variant: str | None) -> Platform:
        return Platform(
            architecture=arch,
            os=platform.os,
            os_version=platform.os_version,
            os_features=platform.os_features,
            variant=variant or None,
        )

    vector = [platform]
    arch, variant = platform.architecture, platform.variant or ""
    if arch == "amd64":
        level = _variant_number(variant)
        if level is not None and level > 1:
            vector.extend(like("amd64", f"v{n}") for n in range(level - 1, 0, -1))
        vector.append(like("386", None))
    elif arch == "arm":
        level = _variant_number(variant)
        if level is not None and level > 5:
            vector.extend(like("arm", f"v{n}") for n in range(level - 1, 4, -1))
    elif arch == "arm64":
        variant = variant or "v8"
        major_text, dot, minor_text = variant.partition(".")
        major = _variant_number(major_text)
        if major is not None and major >= 8:
            minor = int(minor_text) if dot and len(variant) == 4 and minor_text.isdigit() else 0
            if major == 9:
                vector.extend(
                    like("arm64", f"v9.{m}" if m else "v9") for m in range(minor - 1, -1, -1)
                )
                vector.append(like("arm64", f"v8.{minor + 5}"))
                major, minor = 8, minor + 5
            vector.extend(
                like("arm64", f"v{major}.{m}" if m else f"v{major}")
                for m in range(minor - 1, -1, -1)
            )
        if variant.startswith(("v8.", "v9.")):
            variant = "v8"
        vector.extend(_platform_vector(like("arm", variant)))
    return vector


def _variant_number(variant: str) -> int | None:
    text = variant.removeprefix("v")
    return int(text) if text.isdigit() else None


def _key(platform: Platform) -> tuple[str, str, str | None, frozenset[str]]:
    """What containerd's matcher compares: normalised os, architecture, variant, os.features.

    os.version is left out: it only matters for Windows, which bulkhead does not run.
    """
    p = normalize_platform(platform)
    return p.os, p.architecture, p.variant, frozenset(p.os_features or ())


def _wanted(want: Platform) -> list[tuple[str, str, str | None, frozenset[str]]]:
    return [_key(candidate) for candidate in _platform_vector(normalize_platform(want))]


def _rank_in(
    wanted: list[tuple[str, str, str | None, frozenset[str]]], have: Platform
) -> int | None:
    """The position of ``have`` in a platform vector: equal os, architecture and
    variant, and ``have``'s os.features a subset of the wanted ones."""
    os_name, arch, variant, features = _key(have)
    for i, (w_os, w_arch, w_variant, w_features) in enumerate(wanted):
        if (w_os, w_arch, w_variant) == (os_name, arch, variant) and features <= w_features:
            return i
    return None


def platform_matches(want: Platform, have: Platform) -> bool:
    """Whether an image built for ``have`` runs on ``want`` (containerd's ``platforms.Only``).

    ``linux/arm64`` matches ``linux/arm64/v8`` and ``linux/aarch64``;
    ``linux/amd64`` also runs ``linux/386``; ``linux/arm/v7`` also runs v6 and v5.
    """
    return _rank_in(_wanted(want), have) is not None


def select_manifest(index: Index, platform: Platform | None = None) -> Descriptor:
    """The descriptor of ``index`` to use on ``platform`` (default: this host).

    Entries are matched as containerd's ``platforms.Only`` does (see
    :func:`platform_matches`): an exact match first, then the compatible
    older variants in order; among equals the first in the index wins.
    Entries that are neither a manifest nor an index (attestations with
    ``unknown/unknown`` platforms, artifacts) are skipped; an entry without a
    platform is a last resort. Raises :class:`~bulkhead.errors.PlatformNotFound`,
    as Docker does, listing what the index has.
    """
    want = platform if platform is not None else host_platform()
    wanted = _wanted(want)
    usable = MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    available: list[str] = []
    for position, desc in enumerate(index.manifests):
        if desc.media_type not in usable:
            continue
        if desc.platform is None:
            rank: int | None = 1 << 30
        else:
            if desc.platform.os != "unknown":
                available.append(format_platform(desc.platform))
            rank = _rank_in(wanted, desc.platform)
        if rank is not None and (best is None or (rank, position) < best):
            best, chosen = (rank, position), desc
    if chosen is None:
        listed = ", ".join(available) if available else "none"
        raise PlatformNotFound(
            f"no matching manifest for {format_platform(want)} in the manifest list entries "
            f"(available: {listed})",
            available,
        )
    return chosen


def platforms_of(index: Index) -> list[Platform]:
    """The platforms an index has images for (attestation entries left out)."""
    return [
        d.platform for d in index.manifests if d.platform is not None and d.platform.os != "unknown"
    ]
