"""OCI image-spec and Docker manifest models: parsing, digests, chain ids, platforms."""

import base64
import hashlib
import json
import os
from typing import Any

import msgspec
import pytest

from bulkhead.errors import (
    InvalidDigest,
    ManifestError,
    PlatformNotFound,
    Schema1Unsupported,
    UnsupportedMediaType,
)
from bulkhead.oci import image_spec as s
from bulkhead.oci.image_spec import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    chain_ids,
    digest_of,
    host_platform,
    machine_platform,
    normalize_platform,
    parse_image_config,
    parse_manifest,
    parse_platform,
    platform_matches,
    select_manifest,
    validate_digest,
)


def dg(n: int) -> str:
    """A valid, distinct sha256 digest."""
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def oci_manifest(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": s.MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": s.MEDIA_TYPE_OCI_CONFIG, "digest": dg(1), "size": 1470},
        "layers": [
            {"mediaType": s.MEDIA_TYPE_OCI_LAYER_GZIP, "digest": dg(2), "size": 2152262},
            {"mediaType": s.MEDIA_TYPE_OCI_LAYER_ZSTD, "digest": dg(3), "size": 100},
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    doc.update(extra)
    return doc


def docker_manifest() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": s.MEDIA_TYPE_DOCKER_MANIFEST,
        "config": {"mediaType": s.MEDIA_TYPE_DOCKER_CONFIG, "size": 1457, "digest": dg(10)},
        "layers": [
            {"mediaType": s.MEDIA_TYPE_DOCKER_LAYER_GZIP, "size": 2220094, "digest": dg(11)},
            {
                "mediaType": s.MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
                "size": 5,
                "digest": dg(12),
                "urls": ["https://example.invalid/layer"],
            },
        ],
    }


def entry(n: int, arch: str, variant: str | None = None, os: str = "linux", **more: Any):
    platform: dict[str, Any] = {"architecture": arch, "os": os}
    if variant:
        platform["variant"] = variant
    platform.update(more)
    return {
        "mediaType": s.MEDIA_TYPE_OCI_MANIFEST,
        "digest": dg(n),
        "size": 610,
        "platform": platform,
    }


def attestation(n: int, of: int) -> dict[str, Any]:
    return {
        "mediaType": s.MEDIA_TYPE_OCI_MANIFEST,
        "digest": dg(n),
        "size": 566,
        "annotations": {
            "vnd.docker.reference.digest": dg(of),
            "vnd.docker.reference.type": "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    }


# Shaped like Docker Hub's busybox:latest index: ten platforms, each with a
# buildkit attestation manifest next to it.
BUSYBOX_PLATFORMS = [
    ("amd64", None),
    ("arm", "v5"),
    ("arm", "v6"),
    ("arm", "v7"),
    ("arm64", "v8"),
    ("386", None),
    ("mips64le", None),
    ("ppc64le", None),
    ("riscv64", None),
    ("s390x", None),
]


def busybox_index() -> dict[str, Any]:
    manifests = []
    for i, (arch, variant) in enumerate(BUSYBOX_PLATFORMS):
        manifests.append(entry(100 + i, arch, variant))
    for i in range(len(BUSYBOX_PLATFORMS)):
        manifests.append(attestation(200 + i, 100 + i))
    return {
        "schemaVersion": 2,
        "mediaType": s.MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
        "annotations": {"org.opencontainers.image.revision": "abc"},
    }


def docker_manifest_list() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": s.MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": s.MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 527,
                "digest": dg(300),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": s.MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 527,
                "digest": dg(301),
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.17763.5696",
                    "os.features": ["win32k"],
                },
            },
            {
                "mediaType": s.MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 527,
                "digest": dg(302),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
    }


# --- parse_manifest -------------------------------------------------------------


def test_oci_manifest():
    m = parse_manifest(dump(oci_manifest()), s.MEDIA_TYPE_OCI_MANIFEST)
    assert isinstance(m, Manifest)
    assert m.schema_version == 2
    assert m.media_type == s.MEDIA_TYPE_OCI_MANIFEST
    assert m.config.digest == dg(1)
    assert m.config.size == 1470
    assert [layer.digest for layer in m.layers] == [dg(2), dg(3)]
    assert [s.layer_compression(layer.media_type) for layer in m.layers] == ["gzip", "zstd"]
    assert m.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    assert m.subject is None
    assert s.media_type_of(m) == s.MEDIA_TYPE_OCI_MANIFEST


def test_docker_schema2_manifest():
    m = parse_manifest(dump(docker_manifest()), s.MEDIA_TYPE_DOCKER_MANIFEST)
    assert isinstance(m, Manifest)
    assert m.media_type == s.MEDIA_TYPE_DOCKER_MANIFEST
    assert m.config.media_type == s.MEDIA_TYPE_DOCKER_CONFIG
    assert m.layers[1].urls == ["https://example.invalid/layer"]
    assert s.layer_compression(m.layers[0].media_type) == "gzip"
    # Without a served media type the document's own decides.
    assert parse_manifest(dump(docker_manifest())) == m


def test_artifact_manifest_with_subject_and_embedded_data():
    doc = oci_manifest(
        artifactType="application/vnd.example.sbom",
        subject={"mediaType": s.MEDIA_TYPE_OCI_MANIFEST, "digest": dg(9), "size": 7},
        config={
            "mediaType": s.MEDIA_TYPE_OCI_EMPTY,
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2,
            "data": base64.b64encode(b"{}").decode(),
        },
    )
    m = parse_manifest(dump(doc))
    assert isinstance(m, Manifest)
    assert m.artifact_type == "application/vnd.example.sbom"
    assert m.subject is not None and m.subject.digest == dg(9)
    assert m.config.data == b"{}"
    assert digest_of(m.config.data) == m.config.digest


def test_oci_index_busybox_like():
    idx = parse_manifest(dump(busybox_index()), s.MEDIA_TYPE_OCI_INDEX)
    assert isinstance(idx, Index)
    assert len(idx.manifests) == 20
    assert idx.manifests[4].platform == Platform(architecture="arm64", os="linux", variant="v8")
    assert [str(p) for p in s.platforms_of(idx)] == [
        "linux/amd64",
        "linux/arm/v5",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm64/v8",
        "linux/386",
        "linux/mips64le",
        "linux/ppc64le",
        "linux/riscv64",
        "linux/s390x",
    ]


def test_docker_manifest_list():
    idx = parse_manifest(dump(docker_manifest_list()), s.MEDIA_TYPE_DOCKER_MANIFEST_LIST)
    assert isinstance(idx, Index)
    assert idx.media_type == s.MEDIA_TYPE_DOCKER_MANIFEST_LIST
    windows = idx.manifests[1].platform
    assert windows is not None
    assert windows.os_version == "10.0.17763.5696"
    assert windows.os_features == ["win32k"]


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        ({k: v for k, v in oci_manifest().items() if k != "mediaType"}, Manifest),
        ({k: v for k, v in busybox_index().items() if k != "mediaType"}, Index),
    ],
)
def test_kind_detected_from_members_without_media_types(doc, kind):
    parsed = parse_manifest(dump(doc))
    assert isinstance(parsed, kind)
    assert parsed.media_type is None
    assert s.media_type_of(parsed) in (s.MEDIA_TYPE_OCI_MANIFEST, s.MEDIA_TYPE_OCI_INDEX)
    # A generic Content-Type is no better than none.
    assert isinstance(parse_manifest(dump(doc), "application/json; charset=utf-8"), kind)


def test_served_media_type_decides_when_document_has_none():
    doc = {k: v for k, v in docker_manifest().items() if k != "mediaType"}
    m = parse_manifest(dump(doc), s.MEDIA_TYPE_DOCKER_MANIFEST + "; charset=utf-8")
    assert isinstance(m, Manifest)


@pytest.mark.parametrize(
    ("doc", "media_type"),
    [
        ({"schemaVersion": 1, "name": "library/busybox", "tag": "latest", "fsLayers": []}, None),
        ({"name": "x", "fsLayers": [{"blobSum": dg(1)}]}, None),
        ({"schemaVersion": 1}, s.MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST),
        ({"schemaVersion": 1}, s.MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST),
        (
            {"schemaVersion": 1, "mediaType": s.MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST},
            "application/json",
        ),
    ],
)
def test_schema1_refused(doc, media_type):
    with pytest.raises(Schema1Unsupported) as info:
        parse_manifest(dump(doc), media_type)
    message = str(info.value)
    assert message.startswith("schema1 manifests (application/vnd.docker.distribution.manifest.v1")
    assert "Docker removed them; re-push the image with a current client" in message
    assert isinstance(info.value, UnsupportedMediaType)


def test_unknown_served_media_type_is_named():
    with pytest.raises(UnsupportedMediaType) as info:
        parse_manifest(dump(oci_manifest()), "application/vnd.example.thing+json")
    assert info.value.media_type == "application/vnd.example.thing+json"
    assert "application/vnd.example.thing+json" in str(info.value)


def test_unknown_document_media_type_is_named():
    with pytest.raises(UnsupportedMediaType, match=r"application/vnd\.oci\.artifact\.manifest"):
        parse_manifest(
            dump(oci_manifest(mediaType="application/vnd.oci.artifact.manifest.v1+json"))
        )


def test_media_type_contradiction_refused():
    with pytest.raises(ManifestError, match="served as"):
        parse_manifest(dump(oci_manifest()), s.MEDIA_TYPE_DOCKER_MANIFEST)


def test_ambiguous_documents_refused():
    # CVE-2021-41190: one document readable as an index and as a manifest.
    both = oci_manifest(manifests=busybox_index()["manifests"])
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(dump(both), s.MEDIA_TYPE_OCI_MANIFEST)
    index_with_layers = dict(busybox_index(), layers=oci_manifest()["layers"])
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(dump(index_with_layers))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        dump(oci_manifest(schemaVersion=3)),
        dump({k: v for k, v in oci_manifest().items() if k != "config"}),
        dump({k: v for k, v in oci_manifest().items() if k != "schemaVersion"}),
        dump(oci_manifest(layers=[{"mediaType": s.MEDIA_TYPE_OCI_LAYER, "digest": dg(1)}])),
        dump({"schemaVersion": 2}),
        dump(oci_manifest(mediaType=7)),
    ],
)
def test_malformed_manifests(data):
    with pytest.raises(ManifestError):
        parse_manifest(data)


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../../etc/passwd",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
        "sha256",
        "",
    ],
)
def test_bad_descriptor_digests_refused(digest):
    layers = [{"mediaType": s.MEDIA_TYPE_OCI_LAYER, "digest": digest, "size": 1}]
    with pytest.raises(ManifestError, match=r"\$\.layers\[0\]"):
        parse_manifest(dump(oci_manifest(layers=layers)))
    entries = [dict(entry(1, "amd64"), digest=digest)]
    with pytest.raises(ManifestError, match=r"\$\.manifests\[0\]"):
        parse_manifest(dump({"schemaVersion": 2, "manifests": entries}))


def test_negative_size_refused():
    layers = [{"mediaType": s.MEDIA_TYPE_OCI_LAYER, "digest": dg(1), "size": -1}]
    with pytest.raises(ManifestError, match="negative size"):
        parse_manifest(dump(oci_manifest(layers=layers)))


def test_constructed_manifest_round_trips_without_nulls():
    m = Manifest(
        schema_version=2,
        media_type=s.MEDIA_TYPE_OCI_MANIFEST,
        config=Descriptor(media_type=s.MEDIA_TYPE_OCI_CONFIG, digest=dg(1), size=3),
        layers=[Descriptor(media_type=s.MEDIA_TYPE_OCI_LAYER_GZIP, digest=dg(2), size=4)],
    )
    data = s.encode(m)
    assert json.loads(data) == {
        "schemaVersion": 2,
        "mediaType": s.MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": s.MEDIA_TYPE_OCI_CONFIG, "digest": dg(1), "size": 3},
        "layers": [{"mediaType": s.MEDIA_TYPE_OCI_LAYER_GZIP, "digest": dg(2), "size": 4}],
    }
    assert parse_manifest(data) == m
    idx = Index(
        schema_version=2,
        media_type=s.MEDIA_TYPE_OCI_INDEX,
        manifests=[
            Descriptor(
                media_type=s.MEDIA_TYPE_OCI_MANIFEST,
                digest=digest_of(data),
                size=len(data),
                platform=Platform(architecture="arm64", os="linux", variant="v8", os_version="x"),
            )
        ],
    )
    encoded = json.loads(s.encode(idx))
    assert encoded["manifests"][0]["platform"] == {
        "architecture": "arm64",
        "os": "linux",
        "os.version": "x",
        "variant": "v8",
    }
    assert parse_manifest(s.encode(idx)) == idx


# --- image config ------------------------------------------------------------

DOCKER_CONFIG = {
    "architecture": "amd64",
    "config": {
        "Hostname": "",
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
        "Entrypoint": None,
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"maintainer": "x"},
        "StopSignal": "SIGQUIT",
        "ArgsEscaped": True,
        "OnBuild": None,
        "Shell": ["/bin/sh", "-c"],
        "StopTimeout": 3,
        "Healthcheck": {
            "Test": ["CMD-SHELL", "true"],
            "Interval": 30000000000,
            "Retries": 3,
            "StartPeriod": 1000000000,
        },
    },
    "container": "c0ffee",
    "created": "2024-09-26T21:31:42Z",
    "docker_version": "26.1.5",
    "history": [
        {"created": "2024-09-26T21:31:42Z", "created_by": "ADD file:abc in / "},
        {
            "created": "2024-09-26T21:31:42Z",
            "created_by": 'CMD ["sh"]',
            "empty_layer": True,
        },
    ],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [dg(500)]},
}


def test_docker_image_config():
    c = parse_image_config(dump(DOCKER_CONFIG))
    assert isinstance(c, ImageConfig)
    assert (c.architecture, c.os, c.variant) == ("amd64", "linux", None)
    assert c.config is not None
    assert c.config.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert c.config.cmd == ["sh"]
    assert c.config.entrypoint is None
    assert c.config.working_dir == "/srv"
    assert c.config.user == "1000:1000"
    assert c.config.exposed_ports == {"80/tcp": {}}
    assert c.config.volumes == {"/data": {}}
    assert c.config.labels == {"maintainer": "x"}
    assert c.config.stop_signal == "SIGQUIT"
    assert c.config.args_escaped is True
    assert c.config.shell == ["/bin/sh", "-c"]
    assert c.config.stop_timeout == 3
    assert c.config.healthcheck is not None
    assert c.config.healthcheck.test == ["CMD-SHELL", "true"]
    assert c.config.healthcheck.interval == 30_000_000_000
    assert c.config.healthcheck.start_period == 1_000_000_000
    assert c.rootfs.type == "layers"
    assert c.rootfs.diff_ids == [dg(500)]
    assert c.history is not None
    assert c.history[1].empty_layer is True
    assert c.history[0].created_by == "ADD file:abc in / "
    assert c.platform() == Platform(architecture="amd64", os="linux")


def test_image_config_encodes_with_the_spec_keys():
    c = ImageConfig(
        architecture="arm64",
        os="linux",
        variant="v8",
        os_version="6.1",
        config=s.ContainerConfig(cmd=["sh"], working_dir="/", exposed_ports={"53/udp": {}}),
        rootfs=s.RootFS(diff_ids=[dg(1)]),
        history=[s.History(created_by="x", empty_layer=True)],
    )
    doc = json.loads(s.encode(c))
    assert doc == {
        "architecture": "arm64",
        "os": "linux",
        "os.version": "6.1",
        "variant": "v8",
        "config": {"ExposedPorts": {"53/udp": {}}, "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [dg(1)]},
        "history": [{"created_by": "x", "empty_layer": True}],
    }
    assert parse_image_config(s.encode(c)) == c
    # An image without layers still says so: both rootfs members are required.
    empty = ImageConfig(architecture="amd64", os="linux", rootfs=s.RootFS())
    assert json.loads(s.encode(empty))["rootfs"] == {"type": "layers", "diff_ids": []}


@pytest.mark.parametrize(
    "doc",
    [
        {k: v for k, v in DOCKER_CONFIG.items() if k != "rootfs"},
        {k: v for k, v in DOCKER_CONFIG.items() if k != "os"},
        dict(DOCKER_CONFIG, rootfs={"type": "layers", "diff_ids": ["sha256:nothex"]}),
        dict(DOCKER_CONFIG, config={"Cmd": "sh"}),
    ],
)
def test_bad_image_configs(doc):
    with pytest.raises(ManifestError):
        parse_image_config(dump(doc))


def test_image_config_not_json():
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_image_config(b"{")


# --- digests and chain ids ---------------------------------------------------


def test_digest_of():
    empty256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest_of(b"") == empty256
    assert digest_of(memoryview(b"")) == empty256
    assert digest_of(b"", "sha512") == (
        "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
    )
    with pytest.raises(InvalidDigest):
        digest_of(b"", "md5")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "0" * 64,
        digest_of(b"x", "sha512"),
        digest_of(b"x", "sha384"),
    ],
)
def test_valid_digests(digest):
    assert validate_digest(digest) == digest


@pytest.mark.parametrize(
    ("digest", "reason"),
    [
        ("sha256:" + "a" * 63, "length"),
        ("sha256:" + "a" * 65, "length"),
        ("sha512:" + "a" * 64, "length"),
        ("sha256:" + "A" * 64, "format"),
        ("sha256:" + "g" * 64, "format"),
        ("sha256:../../etc/passwd" + "a" * 41, "format"),
        ("sha256:", "format"),
        (":" + "a" * 64, "format"),
        ("a" * 64, "format"),
        ("SHA256:" + "a" * 64, "format"),
        ("md5:" + "a" * 32, "unsupported"),
        ("blake3:" + "a" * 64, "unsupported"),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "unsupported"),
    ],
)
def test_invalid_digests(digest, reason):
    with pytest.raises(InvalidDigest, match=reason):
        validate_digest(digest)


def test_chain_ids():
    a, b, c = dg(1), dg(2), dg(3)
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([a]) == [a]
    assert chain_ids([]) == []
    # The order matters: the same layers stacked differently are another filesystem.
    assert chain_ids([b, a])[-1] != ab
    with pytest.raises(InvalidDigest):
        chain_ids([a, "sha256:bad"])


def test_layer_media_types():
    assert s.layer_compression(s.MEDIA_TYPE_OCI_LAYER) is None
    assert s.layer_compression(s.MEDIA_TYPE_DOCKER_LAYER_GZIP) == "gzip"
    assert s.is_layer_media_type(s.MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP)
    assert not s.is_layer_media_type(s.MEDIA_TYPE_OCI_CONFIG)
    with pytest.raises(UnsupportedMediaType, match="tar\\+encrypted"):
        s.layer_compression("application/vnd.oci.image.layer.v1.tar+encrypted")


# --- platforms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "arch", "variant"),
    [
        ("x86_64", "amd64", None),
        ("aarch64", "arm64", "v8"),
        ("armv7l", "arm", "v7"),
        ("armv6l", "arm", "v6"),
        ("armv5tel", "arm", "v5"),
        ("armv8l", "arm", "v8"),
        ("i686", "386", None),
        ("ppc64le", "ppc64le", None),
        ("s390x", "s390x", None),
        ("riscv64", "riscv64", None),
        ("loongarch64", "loong64", None),
        ("sparc64", "sparc64", None),
    ],
)
def test_machine_platform(machine, arch, variant):
    assert machine_platform(machine) == Platform(architecture=arch, os="linux", variant=variant)


def test_host_platform(monkeypatch):
    class Uname:
        sysname = "Linux"
        machine = "aarch64"

    monkeypatch.setattr(os, "uname", lambda: Uname())
    assert host_platform() == Platform(architecture="arm64", os="linux", variant="v8")
    assert str(host_platform()) == "linux/arm64/v8"


def test_host_platform_is_this_machine():
    p = host_platform()
    assert p.os == "linux"
    assert p == machine_platform(os.uname().machine)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/arm64/v8", Platform(architecture="arm64", os="linux", variant="v8")),
        ("linux/arm64", Platform(architecture="arm64", os="linux")),
        ("linux/aarch64", Platform(architecture="arm64", os="linux")),
        ("linux/aarch64/8", Platform(architecture="arm64", os="linux", variant="v8")),
        ("linux/arm64/v8.2", Platform(architecture="arm64", os="linux", variant="v8.2")),
        ("linux/amd64", Platform(architecture="amd64", os="linux")),
        ("linux/x86_64", Platform(architecture="amd64", os="linux")),
        ("linux/amd64/v3", Platform(architecture="amd64", os="linux", variant="v3")),
        ("linux/amd64/v1", Platform(architecture="amd64", os="linux")),
        ("linux/arm", Platform(architecture="arm", os="linux")),
        ("linux/arm/v7", Platform(architecture="arm", os="linux", variant="v7")),
        ("linux/arm/7", Platform(architecture="arm", os="linux", variant="v7")),
        ("linux/armhf", Platform(architecture="arm", os="linux")),
        ("linux/armel", Platform(architecture="arm", os="linux", variant="v6")),
        ("linux/i386", Platform(architecture="386", os="linux")),
        ("Linux/AMD64", Platform(architecture="amd64", os="linux")),
        ("macos/arm64", Platform(architecture="arm64", os="darwin")),
        (
            "windows(10.0.17763+win32k)/amd64",
            Platform(
                architecture="amd64",
                os="windows",
                os_version="10.0.17763",
                os_features=["win32k"],
            ),
        ),
    ],
)
def test_parse_platform(text, expected):
    assert parse_platform(text) == expected


def test_parse_platform_single_component(monkeypatch):
    monkeypatch.setattr(s, "host_platform", lambda: machine_platform("armv6l"))
    assert parse_platform("linux") == Platform(architecture="arm", os="linux", variant="v6")
    assert parse_platform("arm64") == Platform(architecture="arm64", os="linux")
    assert parse_platform("s390x") == Platform(architecture="s390x", os="linux")
    monkeypatch.setattr(s, "host_platform", lambda: machine_platform("x86_64"))
    assert parse_platform("linux") == Platform(architecture="amd64", os="linux")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected os"),
        ("linux/amd64/v1/extra", "expected os"),
        ("linux/*", "wildcards"),
        ("nosuchthing", "unknown operating system or architecture"),
        ("linux/am d64", "may only have"),
        ("linux//v7", "may only have"),
        ("lin ux/amd64", "not an operating system"),
    ],
)
def test_parse_platform_errors(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_platform(text)


def test_normalize_platform():
    p = normalize_platform(
        Platform(architecture="AArch64", os="Linux", variant="v8", os_features=["b", "a", "b"])
    )
    assert p == Platform(architecture="arm64", os="linux", os_features=["a", "b"])
    assert normalize_platform(Platform(architecture="arm", os="linux")).variant == "v7"
    assert normalize_platform(Platform(architecture="x86_64", os="linux", variant="v1")) == (
        Platform(architecture="amd64", os="linux")
    )


@pytest.mark.parametrize(
    ("want", "have", "matches"),
    [
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/aarch64", "linux/arm64/v8", True),
        ("linux/arm64", "linux/arm/v7", True),
        ("linux/arm64", "linux/arm/v5", True),
        ("linux/arm64/v8.2", "linux/arm64/v8.1", True),
        ("linux/arm64/v8.1", "linux/arm64/v8.2", False),
        ("linux/arm64/v9", "linux/arm64/v8.5", True),
        ("linux/arm64", "linux/amd64", False),
        ("linux/arm/v7", "linux/arm/v6", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/amd64", "linux/386", True),
        ("linux/386", "linux/amd64", False),
        ("linux/amd64/v3", "linux/amd64/v2", True),
        ("linux/amd64/v3", "linux/amd64", True),
        ("linux/amd64", "linux/amd64/v2", False),
        ("linux/amd64", "windows/amd64", False),
    ],
)
def test_platform_matches(want, have, matches):
    assert platform_matches(parse_platform(want), parse_platform(have)) is matches


def test_os_version_ignored_and_os_features_must_be_wanted():
    want = Platform(architecture="amd64", os="linux")
    assert platform_matches(want, Platform(architecture="amd64", os="linux", os_version="5.15"))
    assert not platform_matches(
        want, Platform(architecture="amd64", os="linux", os_features=["sse4"])
    )
    wants_feature = Platform(architecture="amd64", os="linux", os_features=["sse4", "z"])
    assert platform_matches(
        wants_feature, Platform(architecture="amd64", os="linux", os_features=["sse4"])
    )


# --- select_manifest -----------------------------------------------------------


def load_index(doc: dict[str, Any]) -> Index:
    idx = parse_manifest(dump(doc))
    assert isinstance(idx, Index)
    return idx


@pytest.mark.parametrize(
    ("want", "expected"),
    [
        ("linux/amd64", 100),
        ("linux/arm/v5", 101),
        ("linux/arm/v6", 102),
        ("linux/arm/v7", 103),
        ("linux/arm", 103),
        ("linux/arm64", 104),
        ("linux/arm64/v8", 104),
        ("linux/aarch64", 104),
        ("linux/386", 105),
        ("linux/s390x", 109),
        ("linux/amd64/v3", 100),
    ],
)
def test_select_from_busybox_index(want, expected):
    desc = select_manifest(load_index(busybox_index()), parse_platform(want))
    assert desc.digest == dg(expected)


def test_select_defaults_to_the_host(monkeypatch):
    monkeypatch.setattr(s, "host_platform", lambda: machine_platform("aarch64"))
    assert select_manifest(load_index(busybox_index())).digest == dg(104)
    monkeypatch.setattr(s, "host_platform", lambda: machine_platform("x86_64"))
    assert select_manifest(load_index(busybox_index())).digest == dg(100)


def test_select_falls_back_to_compatible_variants_in_order():
    doc = {
        "schemaVersion": 2,
        "manifests": [
            entry(1, "arm", "v5"),
            entry(2, "arm", "v6"),
            entry(3, "386"),
            entry(4, "amd64", "v2"),
            entry(5, "amd64"),
        ],
    }
    idx = load_index(doc)
    assert select_manifest(idx, parse_platform("linux/arm/v7")).digest == dg(2)
    assert select_manifest(idx, parse_platform("linux/arm64")).digest == dg(2)
    assert select_manifest(idx, parse_platform("linux/arm/v5")).digest == dg(1)
    assert select_manifest(idx, parse_platform("linux/amd64/v3")).digest == dg(4)
    assert select_manifest(idx, parse_platform("linux/amd64")).digest == dg(5)
    only_386 = load_index({"schemaVersion": 2, "manifests": [entry(3, "386")]})
    assert select_manifest(only_386, parse_platform("linux/amd64")).digest == dg(3)


def test_select_first_of_equals_and_normalised_names():
    doc = {
        "schemaVersion": 2,
        "manifests": [
            entry(1, "aarch64"),
            entry(2, "arm64", "v8"),
            entry(3, "x86_64", os="Linux"),
        ],
    }
    idx = load_index(doc)
    assert select_manifest(idx, parse_platform("linux/arm64/v8")).digest == dg(1)
    assert select_manifest(idx, parse_platform("linux/amd64")).digest == dg(3)


def test_select_ignores_os_version_on_linux():
    doc = {"schemaVersion": 2, "manifests": [entry(1, "amd64", **{"os.version": "5.10"})]}
    assert select_manifest(load_index(doc), parse_platform("linux/amd64")).digest == dg(1)


def test_select_skips_non_manifests_and_uses_platformless_entries_last():
    doc = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": s.MEDIA_TYPE_OCI_MANIFEST, "digest": dg(1), "size": 1},
            dict(entry(2, "amd64"), mediaType="application/vnd.example.sbom"),
            entry(3, "amd64"),
        ],
    }
    idx = load_index(doc)
    amd64 = parse_platform("linux/amd64")
    assert select_manifest(idx, amd64).digest == dg(3)
    assert select_manifest(idx, parse_platform("linux/riscv64")).digest == dg(1)


def test_select_may_return_a_nested_index():
    nested = dict(entry(1, "amd64"), mediaType=s.MEDIA_TYPE_OCI_INDEX)
    idx = load_index({"schemaVersion": 2, "manifests": [nested]})
    assert select_manifest(idx, parse_platform("linux/amd64")).media_type == s.MEDIA_TYPE_OCI_INDEX


def test_select_docker_manifest_list():
    idx = load_index(docker_manifest_list())
    assert select_manifest(idx, parse_platform("linux/amd64")).digest == dg(300)
    assert select_manifest(idx, parse_platform("linux/arm64")).digest == dg(302)
    windows = Platform(architecture="amd64", os="windows", os_features=["win32k"])
    assert select_manifest(idx, windows).digest == dg(301)


def test_no_match_lists_the_platforms():
    idx = load_index(busybox_index())
    with pytest.raises(PlatformNotFound) as info:
        select_manifest(idx, parse_platform("linux/mips"))
    err = info.value
    assert str(err).startswith(
        "no matching manifest for linux/mips in the manifest list entries (available: "
        "linux/amd64, linux/arm/v5, linux/arm/v6"
    )
    assert "unknown" not in str(err)  # attestation entries are not platforms
    assert err.available[:2] == ["linux/amd64", "linux/arm/v5"]
    assert len(err.available) == 10
    empty = load_index({"schemaVersion": 2, "manifests": []})
    with pytest.raises(PlatformNotFound, match=r"available: none"):
        select_manifest(empty, parse_platform("linux/amd64"))


def test_models_are_msgspec_structs():
    # Callers may decode descriptors on their own (e.g. an OCI layout's index.json).
    d = msgspec.json.decode(
        b'{"mediaType":"x","digest":"sha256:00","size":1,"platform":{"architecture":"a","os":"b"}}',
        type=Descriptor,
    )
    assert d.platform is not None and str(d.platform) == "b/a"
