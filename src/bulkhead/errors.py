"""bulkhead's exceptions, in one tree.

Every error bulkhead raises on purpose derives from :class:`BulkheadError`,
so a caller can catch everything with one clause, or one branch of the tree
with another (httpx's exception tree is the model)::

    BulkheadError
    ├── SpecError                 a config.json (or other input) that is wrong
    ├── ContainerError            an operation on a container that cannot be done
    │   ├── InvalidContainerId
    │   ├── ContainerNotFound
    │   ├── ContainerExists
    │   ├── WrongState            e.g. `start` of a running container
    │   ├── NoSuchContainer       the engine knows no container by this id, prefix or name
    │   ├── NameConflict          a container name already taken
    │   ├── ContainerNotRunning   e.g. `exec` in a stopped container
    │   ├── ContainerRunning      e.g. `rm` of a running container without force
    │   └── ExecError             an exec instance that cannot be created or started
    │       └── NoSuchExec
    ├── StartError                the container's process could not be started
    │   └── ExecutableNotFound    exit code 127, as runc and shells use
    ├── HookError                 an OCI hook failed or timed out
    ├── CgroupError               a cgroup could not be created or configured
    ├── SeccompError              a seccomp profile could not be compiled or loaded
    ├── UnsupportedError          asked for something this host cannot do
    ├── ImageError                images: references, manifests, content, registries, layers
    │   ├── InvalidReference      a name that is not a valid image reference
    │   ├── ManifestError         a manifest, index or image config that cannot be used
    │   │   ├── UnsupportedMediaType  a media type bulkhead does not handle
    │   │   ├── Schema1Unsupported    Docker's removed schema1 manifests
    │   │   └── PlatformNotFound      no manifest of an index matches the platform
    │   ├── ContentError          blobs in the content store
    │   │   ├── InvalidDigest     not ``algorithm:hex`` of a supported algorithm
    │   │   ├── DigestMismatch    content does not hash to the digest it claims
    │   │   ├── SizeMismatch      content is not as long as its descriptor says
    │   │   └── BlobNotFound      no blob with this digest
    │   ├── RegistryError         talking to a registry (distribution spec)
    │   │   ├── AuthenticationError  credentials missing or refused (401/403)
    │   │   ├── NotFoundError     repository, manifest or blob unknown (404)
    │   │   └── RegistryUnavailable  cannot connect, 5xx, timeouts
    │   ├── LayerError            a layer tar that cannot be applied
    │   │   └── UnsafeLayer       an entry would escape the root (.., symlinks, hardlinks)
    │   ├── ImageNotFound         no image by this name, id or id prefix
    │   └── ImageInUse            removal refused: containers use it, or several names (force)
    ├── SnapshotError             snapshots (prepare / commit / remove / mounts)
    │   ├── SnapshotNotFound
    │   └── SnapshotExists
    ├── VolumeError               named volumes: create, mount, remove
    │   ├── NoSuchVolume
    │   └── VolumeInUse
    └── NetworkError              networks: create, connect, remove, addresses
        ├── NoSuchNetwork         no network by this name, id or id prefix (404)
        ├── NetworkConflict       a name taken, an address in use, active endpoints (409)
        └── NetworkForbidden      removing a pre-defined network (403)

Each class carries ``exit_code``: what a command-line front end exits with.
This module imports nothing, so every package (``oci`` and ``linux``
included) may use it.
"""

from __future__ import annotations


class BulkheadError(Exception):
    """The root of every error bulkhead raises on purpose."""

    exit_code: int = 1


class SpecError(BulkheadError):
    """Input that does not follow its specification.

    ``where`` names what was wrong: a file, a JSON path such as
    ``$.process.user.uid``, or a field name.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ContainerError(BulkheadError):
    """An operation on a container that cannot be done."""


class InvalidContainerId(ContainerError):
    """A container id that is empty, too long or has characters runc refuses."""


class ContainerNotFound(ContainerError):
    """No container with this id exists under the runtime's root."""


class ContainerExists(ContainerError):
    """A container with this id already exists."""


class WrongState(ContainerError):
    """The container is not in a state that allows the operation."""


class StartError(BulkheadError):
    """The container's process could not be set up or started.

    ``step`` names the step of the container's init that failed (for example
    ``"pivot_root"``) and ``errno`` the kernel's error number, when known.
    """

    def __init__(self, message: str, step: str | None = None, errno: int | None = None) -> None:
        self.step = step
        self.errno = errno
        super().__init__(message)


class ExecutableNotFound(StartError):
    """The process's executable does not exist (exit code 127, as runc)."""

    exit_code = 127


class ExecutableNotRunnable(StartError):
    """The process's executable exists but may not be executed (exit code 126, as a shell)."""

    exit_code = 126


class HookError(BulkheadError):
    """An OCI lifecycle hook failed, or did not finish within its timeout."""


class CgroupError(BulkheadError):
    """A cgroup could not be created, configured, read or removed."""


class SeccompError(BulkheadError):
    """A seccomp profile could not be compiled or loaded."""


class UnsupportedError(BulkheadError):
    """Something was asked for that this host (kernel, LSM, init system) lacks."""


# --- images and snapshots (issue 4) ------------------------------------------


class ImageError(BulkheadError):
    """Something about an image went wrong: its name, manifests, blobs, registry or layers."""


class InvalidReference(ImageError):
    """A string that is not a valid image reference (``name[:tag][@digest]``).

    Messages follow Docker's: ``invalid reference format: repository name
    must be lowercase``. ``reference`` is the text that was refused.
    """

    def __init__(self, message: str, reference: str | None = None) -> None:
        self.reference = reference
        super().__init__(message)


class ManifestError(ImageError):
    """A manifest, index or image config that is malformed or cannot be used."""


class UnsupportedMediaType(ManifestError):
    """A document or blob whose media type bulkhead does not handle (named in ``media_type``)."""

    def __init__(self, message: str, media_type: str | None = None) -> None:
        self.media_type = media_type
        super().__init__(message)


class Schema1Unsupported(UnsupportedMediaType):
    """A Docker schema1 manifest: Docker removed support for them, and so does bulkhead."""


class PlatformNotFound(ManifestError):
    """No manifest of an index matches the requested platform (``available`` lists them)."""

    def __init__(self, message: str, available: list[str] | None = None) -> None:
        self.available = available or []
        super().__init__(message)


class ContentError(ImageError):
    """A blob in (or on its way into) the content store is missing or not what it claims."""

    def __init__(self, message: str, digest: str | None = None) -> None:
        self.digest = digest
        super().__init__(message)


class InvalidDigest(ContentError):
    """A digest string that is malformed (``algorithm:encoded``) or of an unsupported algorithm."""


class DigestMismatch(ContentError):
    """Content does not hash to the digest it was expected to have."""

    def __init__(
        self,
        message: str,
        digest: str | None = None,
        *,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message, digest if digest is not None else expected)


class SizeMismatch(ContentError):
    """Content is not as long as its descriptor says."""

    def __init__(
        self,
        message: str,
        digest: str | None = None,
        *,
        expected: int | None = None,
        actual: int | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message, digest)


class BlobNotFound(ContentError):
    """No blob with this digest is in the content store."""


class RegistryError(ImageError):
    """A registry refused a request or could not be reached.

    ``status`` is the HTTP status when there was a response, ``code`` the
    distribution spec's error code (``MANIFEST_UNKNOWN``, ``DENIED``, ...).
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class AuthenticationError(RegistryError):
    """Credentials are missing or were refused (401/403, or the token server said no)."""


AuthError = AuthenticationError


class NotFoundError(RegistryError):
    """The registry does not know the repository, manifest or blob (404)."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out or answered with a server error."""


class LayerError(ImageError):
    """A layer (a tar stream of filesystem changes) that cannot be read or applied."""


class UnsafeLayer(LayerError):
    """A layer entry that would write outside the root: ``..``, absolute links, link escapes."""


class ImageNotFound(ImageError):
    """No image in the image store has this name, repo digest, id or id prefix."""


class ImageInUse(ImageError):
    """An image cannot be removed without force: containers use it, or it has several names."""


class SnapshotError(BulkheadError):
    """A snapshot (a filesystem a snapshotter prepared, committed or mounts) operation failed."""


class SnapshotNotFound(SnapshotError):
    """No snapshot with this key or name exists."""


class SnapshotExists(SnapshotError):
    """A snapshot with this key or name already exists."""


# --- engine (issue 5) ---------------------------------------------------------


# ContainerError (above) is the root for the engine's container errors too.


class NoSuchContainer(ContainerError):
    """No container has this id, id prefix or name (HTTP 404)."""


class NameConflict(ContainerError):
    """The container name is taken (HTTP 409)."""


class ContainerNotRunning(ContainerError):
    """The operation needs a running container (HTTP 409)."""


class ContainerRunning(ContainerError):
    """The operation needs a stopped container, e.g. removal without force (HTTP 409)."""


class ExecError(ContainerError):
    """An exec instance could not be created or started."""


class NoSuchExec(ExecError):
    """No exec instance has this id (HTTP 404)."""


class VolumeError(BulkheadError):
    """A volume could not be created, found, mounted or removed."""


class NoSuchVolume(VolumeError):
    """No volume has this name (HTTP 404)."""


class VolumeInUse(VolumeError):
    """The volume is used by a container (HTTP 409)."""


class NetworkError(BulkheadError):
    """A network could not be created, found, connected or removed."""


class NoSuchNetwork(NetworkError):
    """No network has this name, id or id prefix (HTTP 404)."""


class NetworkConflict(NetworkError):
    """A network name or an address in use, or a network with active endpoints (HTTP 409)."""


class NetworkForbidden(NetworkError):
    """An operation never allowed, e.g. removing a pre-defined network (HTTP 403)."""
