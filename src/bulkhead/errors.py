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
    │   └── WrongState            e.g. `start` of a running container
    ├── StartError                the container's process could not be started
    │   └── ExecutableNotFound    exit code 127, as runc and shells use
    ├── HookError                 an OCI hook failed or timed out
    ├── CgroupError               a cgroup could not be created or configured
    ├── SeccompError              a seccomp profile could not be compiled or loaded
    └── UnsupportedError          asked for something this host cannot do

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
