"""Errors on the wire: bulkhead's exception tree mapped to Docker's status codes.

Docker's daemon (moby ``errdefs``) classifies every error by category and the
HTTP layer turns the category into a status: invalid parameter 400,
unauthorized 401, forbidden 403, not found 404, conflict 409, not modified
304, not implemented 501, unavailable 503, anything else 500. The body is
always ``{"message": "..."}``.

Handlers either raise a :class:`~bulkhead.errors.BulkheadError` (mapped by
:func:`status_for`) or an :class:`APIError` that names its status directly.
"""

from __future__ import annotations

from bulkhead import errors as e
from bulkhead.engine.monitor import MonitorBadRequest, ProcessNotExecutable, ProcessNotFound


class APIError(e.BulkheadError):
    """An error that knows its HTTP status (``{"message": str(self)}`` on the wire)."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        super().__init__(message)


class BadRequest(APIError):
    """400: a malformed request, an invalid parameter or a client version we do not serve."""

    status = 400


class NotFound(APIError):
    """404: no such object (or no such route: ``page not found``)."""

    status = 404


class Conflict(APIError):
    """409: a name in use, an object in the wrong state for the operation."""

    status = 409


class NotModified(APIError):
    """304: nothing to do (e.g. starting a running container); sent without a body."""

    status = 304


class NotImplementedYet(APIError):
    """501: an endpoint the engine does not implement (yet)."""

    status = 501


# Most specific first: the first class an exception is an instance of wins.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (ProcessNotFound, 400),  # Docker: 400 "executable file not found"; the CLI exits 127
    (ProcessNotExecutable, 400),
    (MonitorBadRequest, 400),
    (e.InvalidContainerId, 400),
    (e.InvalidReference, 400),
    (e.InvalidDigest, 400),
    (e.SpecError, 400),
    (e.ContainerNotFound, 404),
    (e.NoSuchContainer, 404),
    (e.NoSuchExec, 404),
    (e.NoSuchVolume, 404),
    (e.NoSuchNetwork, 404),
    (e.NetworkConflict, 409),
    (e.NetworkForbidden, 403),
    (e.ImageNotFound, 404),
    (e.SnapshotNotFound, 404),
    (e.BlobNotFound, 404),
    (e.PlatformNotFound, 404),
    (e.NotFoundError, 404),
    (e.ContainerExists, 409),
    (e.SnapshotExists, 409),
    (e.ImageInUse, 409),
    (e.NameConflict, 409),
    (e.ContainerNotRunning, 409),
    (e.ContainerRunning, 409),
    (e.VolumeInUse, 409),
    (e.WrongState, 409),
    (e.AuthenticationError, 401),
    (e.RegistryUnavailable, 503),
    (e.UnsupportedError, 400),
    (e.UnsupportedMediaType, 400),
    (e.ExecutableNotFound, 400),
    (e.ExecutableNotRunnable, 400),
)


def status_for(exc: BaseException) -> int:
    """Docker's HTTP status for ``exc``: 500 for anything not classified."""
    if isinstance(exc, APIError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500
