"""The error vocabulary shared by the state machine, the daemons, the client and the CLI.

Every error has a code that maps 1:1 onto a gRPC status code, so an error raised inside the
replicated state machine reaches the user with the same code and message on every replica.
"""
from __future__ import annotations

import errno as _errno

import grpc

CODES: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "ABORTED": grpc.StatusCode.ABORTED,
    "DATA_LOSS": grpc.StatusCode.DATA_LOSS,
    "OUT_OF_RANGE": grpc.StatusCode.OUT_OF_RANGE,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


class GfsError(Exception):
    """Base error: `code` is one of CODES, `message` is one human-readable line."""

    code = "INTERNAL"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return CODES.get(self.code, grpc.StatusCode.INTERNAL)


class InvalidArgument(GfsError):
    code = "INVALID_ARGUMENT"


class NotFound(GfsError):
    code = "NOT_FOUND"


class AlreadyExists(GfsError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(GfsError):
    code = "FAILED_PRECONDITION"


class OutOfRange(GfsError):
    """A value beyond what this cluster accepts here (e.g. a file too large to store inline)."""
    code = "OUT_OF_RANGE"


class Unavailable(GfsError):
    code = "UNAVAILABLE"


class Aborted(GfsError):
    """Interrupted midway (e.g. a membership change when the leadership moved): it may or may
    not have taken effect, so it is not retried blindly."""
    code = "ABORTED"


class DeadlineExceeded(GfsError):
    code = "DEADLINE_EXCEEDED"


class DataLoss(GfsError):
    code = "DATA_LOSS"


class ResourceExhausted(GfsError):
    """Out of room (a chunkserver at its capacity, a full disk)."""
    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(GfsError):
    """The caller is known but lacks the right for this operation."""
    code = "PERMISSION_DENIED"


class Unauthenticated(GfsError):
    """No valid credentials: a malformed, unknown, revoked or expired token."""
    code = "UNAUTHENTICATED"


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
                                      Unavailable, Aborted, DeadlineExceeded, DataLoss,
                                      ResourceExhausted, PermissionDenied, Unauthenticated)}
_BY_GRPC = {v: k for k, v in CODES.items()}


def from_code(code: str, message: str) -> GfsError:
    """Build the matching GfsError subclass for a code string."""
    cls = _BY_CODE.get(code, GfsError)
    return cls(message) if cls is not GfsError else GfsError(message, code)


def from_grpc(code: grpc.StatusCode, message: str) -> GfsError:
    """Build a GfsError from a gRPC status."""
    return from_code(_BY_GRPC.get(code, "INTERNAL"), message)


# A code → the POSIX errno that file-system interfaces (the FUSE mount, fsspec) report.
_ERRNO = {"NOT_FOUND": _errno.ENOENT, "ALREADY_EXISTS": _errno.EEXIST,
          "PERMISSION_DENIED": _errno.EACCES, "UNAUTHENTICATED": _errno.EACCES,
          "RESOURCE_EXHAUSTED": _errno.ENOSPC, "INVALID_ARGUMENT": _errno.EINVAL,
          "UNAVAILABLE": _errno.EIO, "DEADLINE_EXCEEDED": _errno.ETIMEDOUT,
          "DATA_LOSS": _errno.EIO}


def errno_of(err: GfsError) -> int:
    """The errno a POSIX program expects for `err` (FAILED_PRECONDITION told apart by its
    message: a directory where a file was expected, a file in a path, a non-empty directory)."""
    code = _ERRNO.get(err.code)
    if code is not None:
        return code
    if err.code == "FAILED_PRECONDITION":
        text = str(err)
        if "is a directory" in text:
            return _errno.EISDIR
        if "not a directory" in text:
            return _errno.ENOTDIR
        if "not empty" in text:
            return _errno.ENOTEMPTY
    return _errno.EIO
