"""Typed exceptions for every C status code (xrt.h). The binding raises them through one factory (E2)."""

from __future__ import annotations


class Error(Exception):
    """Base of every xpuruntime error. ``code`` is the C status number, ``status`` its name (``xrt_status_code_t``)."""

    code = 9
    status = "INTERNAL"

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.status}] {self.message}"


class InvalidArgument(Error, ValueError):
    """The caller passed a bad value: missing/unknown input, wrong dtype or shape."""
    code, status = 1, "INVALID_ARGUMENT"


class NotFound(Error, LookupError):
    """A file, section, name or variant that does not exist."""
    code, status = 2, "NOT_FOUND"


class FailedPrecondition(Error):
    """Calls in the wrong order, or an object in the wrong state (e.g. a closed session)."""
    code, status = 3, "FAILED_PRECONDITION"


class ResourceExhausted(Error, MemoryError):
    """An allocation failed or a size is over a documented cap."""
    code, status = 4, "RESOURCE_EXHAUSTED"


class Unavailable(Error):
    """A backend or device is not present on this machine."""
    code, status = 5, "UNAVAILABLE"


class Incompatible(Error):
    """The bundle targets another format version, device or engine version."""
    code, status = 6, "INCOMPATIBLE"


class DataCorrupt(Error):
    """The bundle's bytes fail a structural or digest check."""
    code, status = 7, "DATA_CORRUPT"


class Unimplemented(Error, NotImplementedError):
    code, status = 8, "UNIMPLEMENTED"


class Internal(Error, RuntimeError):
    code, status = 9, "INTERNAL"


class IOFailure(Error, OSError):
    """The operating system refused a read or write."""
    code, status = 10, "IO"


class AlreadyExists(Error, FileExistsError):
    code, status = 11, "ALREADY_EXISTS"


class PermissionDenied(Error, PermissionError):
    """The signature policy refused the bundle: it is unsigned, or signed by a key that is not trusted (load()'s
    ``trusted_keys`` / ``require_signature``). A signature that does not match the bytes is DataCorrupt."""
    code, status = 12, "PERMISSION_DENIED"


SignatureError = PermissionDenied  # the name to catch when refusing untrusted bundles reads better that way

_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted, Unavailable,
                                      Incompatible, DataCorrupt, Unimplemented, Internal, IOFailure, AlreadyExists,
                                      PermissionDenied)}


def from_status(code: int, message: str) -> Error:
    """The exception for a C status code (the binding's error factory)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else Error(message, code)
