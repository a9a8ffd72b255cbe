"""The one exception type the reader raises for every rejected bundle."""

from __future__ import annotations

# Status names are those of the C API's xrt_status_code_t (formats/xrtpkg.md, "Verdicts").
DATA_CORRUPT = "DATA_CORRUPT"
INCOMPATIBLE = "INCOMPATIBLE"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
PERMISSION_DENIED = "PERMISSION_DENIED"
_STATUSES = (DATA_CORRUPT, INCOMPATIBLE, RESOURCE_EXHAUSTED, PERMISSION_DENIED)


class FormatError(Exception):
    """A bundle was rejected.

    Callers branch on ``status`` (never on the message text):
      - ``DATA_CORRUPT``: the bytes are not a well-formed bundle (damaged, truncated, tampered with);
        re-create the bundle with ``xrtc compile``.
      - ``INCOMPATIBLE``: a bundle of another major format version; rebuild it with a matching
        ``xrtc`` or upgrade the runtime.
      - ``RESOURCE_EXHAUSTED``: a cap of the format is exceeded (section count, compressed section
        size, manifest size).
      - ``PERMISSION_DENIED``: a signature policy was given (trusted keys, or ``require_signature``) and
        the bundle is unsigned or signed by a key that is not trusted; sign it with a trusted key
        (``xrtc sign``). A signature that does not match the bytes is ``DATA_CORRUPT``.
    ``check`` names the step of the spec's check order that failed (e.g. ``"index_sha256"``); it is
    informational, for tests and diagnostics.
    """

    def __init__(self, status: str, message: str, check: str = "") -> None:
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {_STATUSES}")
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.check = check
