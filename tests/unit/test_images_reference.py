"""Image references: Docker's grammar and normalisation.

The tables restate the cases of distribution/reference's own tests
(reference_test.go, normalize_test.go) as facts about what Docker accepts
and how it names things.
"""

import pytest

from bulkhead.errors import ImageError, InvalidReference
from bulkhead.images.reference import (
    Reference,
    is_image_id,
    parse_reference,
    valid_tag,
)

F64 = "f" * 64
SHA256 = "sha256:" + F64
SHA512 = "sha512:" + "f" * 128

# input -> (repository, tag, digest) after normalisation (default tag "latest").
NORMALISED = [
    ("busybox", "docker.io/library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
    ("library/busybox", "docker.io/library/busybox", "latest", None),
    ("docker.io/busybox", "docker.io/library/busybox", "latest", None),
    ("docker.io/library/busybox", "docker.io/library/busybox", "latest", None),
    ("index.docker.io/busybox", "docker.io/library/busybox", "latest", None),
    ("index.docker.io/library/busybox", "docker.io/library/busybox", "latest", None),
    ("index.docker.io/docker/docker", "docker.io/docker/docker", "latest", None),
    ("docker/docker", "docker.io/docker/docker", "latest", None),
    ("localhost/x", "localhost/x", "latest", None),
    ("localhost:5000/x", "localhost:5000/x", "latest", None),
    ("localhost:5000/x:1", "localhost:5000/x", "1", None),
    ("busybox@" + SHA256, "docker.io/library/busybox", None, SHA256),
    ("busybox:latest@" + SHA256, "docker.io/library/busybox", "latest", SHA256),
    ("test.com/repo:tag", "test.com/repo", "tag", None),
    ("test:5000/repo", "test:5000/repo", "latest", None),
    ("test:5000/repo@" + SHA256, "test:5000/repo", None, SHA256),
    ("test:5000/repo:tag@" + SHA256, "test:5000/repo", "tag", SHA256),
    ("test_com", "docker.io/library/test_com", "latest", None),
    ("test.com:tag", "docker.io/library/test.com", "tag", None),
    ("test.com:5000", "docker.io/library/test.com", "5000", None),
    ("lowercase:Uppercase", "docker.io/library/lowercase", "Uppercase", None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux", "latest", None),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com/bar/baz/quux",
        "some-long-tag",
        None,
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io/test.example.com/my-app",
        "test.example.com",
        None,
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage", "xn--n3h.com", None),
    (
        "xn--7o8h.com/myimage:xn--7o8h.com@" + SHA512,
        "xn--7o8h.com/myimage",
        "xn--7o8h.com",
        SHA512,
    ),
    ("foo_bar.com:8080", "docker.io/library/foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com", "8080", None),
    ("192.168.1.1", "docker.io/library/192.168.1.1", "latest", None),
    ("192.168.1.1:5000", "docker.io/library/192.168.1.1", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1/repo", "latest", None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo", "latest", None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo", "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo", "latest", None),
    ("[2001:db8::1]:5000/repo:tag@" + SHA256, "[2001:db8::1]:5000/repo", "tag", SHA256),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo", "latest", None),
    ("[::1]:5000/repo", "[::1]:5000/repo", "latest", None),
    ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker", "latest", None),
    # A first component with uppercase letters is a domain, as in Docker.
    ("Docker/docker", "Docker/docker", "latest", None),
    ("DOCKER/docker", "DOCKER/docker", "latest", None),
    # A 64-hex path is fine with a domain in front: then it is not an image id.
    ("docker.io/" + "1a3f" * 16, "docker.io/library/" + "1a3f" * 16, "latest", None),
    ("docker-rules/docker", "docker.io/docker-rules/docker", "latest", None),
    ("docker---rules/docker", "docker.io/docker---rules/docker", "latest", None),
    ("dock__er/docker", "docker.io/dock__er/docker", "latest", None),
    ("d/docker", "docker.io/d/docker", "latest", None),
    ("jess/t", "docker.io/jess/t", "latest", None),
    # 64 characters that are not all hex digits: a name, not an image id.
    (
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "latest",
        None,
    ),
]


@pytest.mark.parametrize(("text", "repository", "tag", "digest"), NORMALISED)
def test_normalised(text, repository, tag, digest):
    ref = parse_reference(text)
    assert ref.repository == repository
    assert ref.name == repository
    assert ref.tag == tag
    assert ref.digest == digest
    expected = repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assert str(ref) == expected
    # The full form parses to itself.
    assert parse_reference(str(ref)) == ref


def test_domain_and_path():
    ref = parse_reference("busybox")
    assert (ref.domain, ref.path) == ("docker.io", "library/busybox")
    ref = parse_reference("test_com/foo")
    assert (ref.domain, ref.path) == ("docker.io", "test_com/foo")
    ref = parse_reference("test-com:8080/foo")
    assert (ref.domain, ref.path) == ("test-com:8080", "foo")
    ref = parse_reference("xn--n3h.com:18080/foo")
    assert (ref.domain, ref.path) == ("xn--n3h.com:18080", "foo")
    ref = parse_reference("docker.io/library/foo/bar")
    assert (ref.domain, ref.path) == ("docker.io", "library/foo/bar")


# (remote name, familiar name, full name, another spelling or None, domain)
REPOSITORY_INFO = [
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", None, "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", None, "docker.io"),
    (
        "private/moonbase",
        "127.0.0.1:8000/private/moonbase",
        "127.0.0.1:8000/private/moonbase",
        None,
        "127.0.0.1:8000",
    ),
    (
        "privatebase",
        "127.0.0.1:8000/privatebase",
        "127.0.0.1:8000/privatebase",
        None,
        "127.0.0.1:8000",
    ),
    (
        "private/moonbase",
        "example.com/private/moonbase",
        "example.com/private/moonbase",
        None,
        "example.com",
    ),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", None, "example.com"),
    (
        "private/moonbase",
        "example.com:8000/private/moonbase",
        "example.com:8000/private/moonbase",
        None,
        "example.com:8000",
    ),
    (
        "library/ubuntu-12.04-base",
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base",
        "index.docker.io/library/ubuntu-12.04-base",
        "docker.io",
    ),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", None, "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", None, "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", None, "Foo"),
    ("bar", "FOO/bar", "FOO/bar", None, "FOO"),
]


@pytest.mark.parametrize(("remote", "familiar", "full", "other", "domain"), REPOSITORY_INFO)
def test_repository_info(remote, familiar, full, other, domain):
    for text in [familiar, full] + ([other] if other else []):
        ref = parse_reference(text, default_tag=None)
        assert ref.familiar_name() == familiar
        assert ref.familiar() == familiar
        assert ref.repository == full
        assert str(ref) == full
        assert ref.domain == domain
        assert ref.path == remote


def test_familiar_keeps_tag_and_digest():
    short = (
        "busybox:latest@sha256:"
        + "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    )
    ref = parse_reference(short)
    assert str(ref) == "docker.io/library/" + short
    assert ref.tag == "latest"
    assert ref.digest is not None
    assert ref.familiar() == short
    assert parse_reference("busybox").familiar() == "busybox:latest"
    assert parse_reference("localhost:5000/a/b:c").familiar() == "localhost:5000/a/b:c"


def test_name_with_tag():
    assert parse_reference("busybox").name_with_tag() == "docker.io/library/busybox:latest"
    assert parse_reference("busybox:1").name_with_tag() == "docker.io/library/busybox:1"
    by_digest = parse_reference("busybox@" + SHA256)
    assert by_digest.name_with_tag() == "docker.io/library/busybox"
    both = parse_reference("busybox:1@" + SHA256)
    assert both.name_with_tag() == "docker.io/library/busybox:1"


def test_default_tag():
    assert parse_reference("busybox", default_tag=None).tag is None
    assert parse_reference("busybox", default_tag="stable").tag == "stable"
    assert parse_reference("busybox:1", default_tag="stable").tag == "1"
    assert parse_reference("busybox@" + SHA256, default_tag="stable").tag is None


INVALID = [
    "",
    ":justtag",
    "@" + SHA256,
    "aa/asdf$$^/aa",
    "https://github.com/docker/docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker-/docker",
    "-docker-/docker",
    "docker///docker",
    "docker.io/docker///docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "[2001:db8::1]",
    "[2001:db8::1]:5000",
    "[2001:db8::1]:tag",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/repo",
    "[fe80::1%@invalidzone]:5000/repo",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "busybox:-tag",
    "busybox:" + "a" * 129,
    "busybox@sha256:tooshort",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text):
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert str(info.value).startswith("invalid reference format")
    assert isinstance(info.value, ImageError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Busybox",
            "invalid reference format: repository name (library/Busybox) must be lowercase",
        ),
        (
            "docker/Docker",
            "invalid reference format: repository name (docker/Docker) must be lowercase",
        ),
        (
            "docker.io/docker/Docker",
            "invalid reference format: repository name (docker/Docker) must be lowercase",
        ),
        (
            "test:5000/Uppercase/lowercase:tag",
            "invalid reference format: repository name (Uppercase/lowercase) must be lowercase",
        ),
        (
            "a/" * 128 + "a:tag",
            "invalid reference format: repository name must not be more than 255 characters",
        ),
        (
            "repo@sha256:" + "f" * 34,
            "invalid reference format: invalid checksum digest length: sha256:" + "f" * 34,
        ),
        (
            "validname@invaliddigest:" + F64,
            "invalid reference format: unsupported digest algorithm: invaliddigest:" + F64,
        ),
        (
            "repo@sha256:" + "F" * 64,
            "invalid reference format: invalid checksum digest format: sha256:" + "F" * 64,
        ),
        (
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "invalid repository name (1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a),"
            " cannot specify 64-byte hexadecimal strings",
        ),
    ],
)
def test_messages(text, message):
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert str(info.value) == message
    assert info.value.reference == text


def test_path_length_limit_counts_the_path_only():
    ok = "a/" * 127 + "a:tag-puts-this-over-max"
    ref = parse_reference(ok)
    assert ref.domain == "docker.io"
    assert ref.path == "a/" * 127 + "a"
    assert ref.tag == "tag-puts-this-over-max"


def test_tag_limits():
    assert parse_reference("busybox:" + "a" * 128).tag == "a" * 128
    assert parse_reference("busybox:_x").tag == "_x"
    assert valid_tag("v1.2.3-rc_1")
    assert not valid_tag(".x")
    assert not valid_tag("")


def test_with_tag_and_digest():
    ref = parse_reference("test.com:8000/foo", default_tag=None)
    assert str(ref.with_tag("TAG5")) == "test.com:8000/foo:TAG5"
    digest = "sha256:" + "1234567890098765432112345667890098765432112345667890098765432112"
    both = ref.with_digest(digest).with_tag("TAG5")
    assert str(both) == f"test.com:8000/foo:TAG5@{digest}"
    assert str(both.without_tag()) == f"test.com:8000/foo@{digest}"
    assert str(both.repository_only()) == "test.com:8000/foo"
    with pytest.raises(InvalidReference):
        ref.with_tag("-foo")
    with pytest.raises(InvalidReference):
        ref.with_digest("foo")


def test_reference_is_hashable_and_comparable():
    a = parse_reference("busybox")
    b = parse_reference("docker.io/library/busybox:latest")
    assert a == b
    assert len({a, b}) == 1
    assert a == Reference(domain="docker.io", path="library/busybox", tag="latest")


def test_is_image_id():
    assert is_image_id(F64)
    assert is_image_id(SHA256)
    assert not is_image_id("f" * 63)
    assert not is_image_id("busybox")
