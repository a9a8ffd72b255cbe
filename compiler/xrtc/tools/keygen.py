"""`xrtc keygen`: create an Ed25519 key pair for signing bundles (`xrtc sign`)."""

from __future__ import annotations

import logging
import os

from ..errors import OutputExistsError, UsageError, XrtcError

log = logging.getLogger("xrtc.keygen")


def _write_new(path: str, data: bytes, mode: int, force: bool) -> None:
    """Writes ``path`` with ``mode`` from its creation on (a private key is never readable by others, not even
    briefly); atomic: a temporary file in the same folder is renamed over ``path``."""
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode is masked by the umask; the key's mode must not be
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class Keygen:
    """Create an Ed25519 signing key pair: NAME.key (private, PKCS#8 PEM, mode 0600) and NAME.pub (public).

    NAME.pub holds the raw 32-byte public key as 64 hex characters and a newline: hand it to whoever loads your
    bundles (`xrt.load(..., trusted_keys=["NAME.pub"])`, `xrtc run --trusted-key NAME.pub`, `xrt-run --trusted-key
    NAME.pub`). Keep NAME.key secret: anyone holding it can sign bundles that those loaders accept. Existing files
    are never overwritten without --force.
    """

    name = "keygen"

    def add_args(self, parser) -> None:
        parser.add_argument("-o", "--output", required=True, metavar="NAME",
                        help="write NAME.key and NAME.pub (a trailing .key or .pub is dropped)")
        parser.add_argument("--force", action="store_true", help="overwrite NAME.key / NAME.pub if they exist")

    def run(self, args) -> int:
        import xrtpkg

        base = args.output
        for ext in (".key", ".pub"):
            if base.endswith(ext):
                base = base[: -len(ext)]
        if not base or base.endswith(os.sep):
            raise UsageError(f"-o {args.output!r}: give a file name, e.g. -o keys/release")
        key_path, pub_path = base + ".key", base + ".pub"
        if not args.force:
            for p in (key_path, pub_path):
                if os.path.lexists(p):
                    raise OutputExistsError(f"{p} already exists; pass --force to overwrite it (the old key is lost)")
        pem, public = xrtpkg.generate_key_pair()
        try:
            _write_new(key_path, pem, 0o600, args.force)
            _write_new(pub_path, public.hex().encode() + b"\n", 0o644, args.force)
        except FileExistsError as err:
            raise OutputExistsError(f"{err.filename or base} already exists; pass --force to overwrite it") from err
        except OSError as err:
            raise XrtcError(f"cannot write the key pair {base}.key/.pub: {err.strerror or err}") from err
        log.info("private key %s (keep it secret), public key %s", key_path, pub_path)
        print(f"private key {key_path} (mode 0600: keep it secret)")
        print(f"public key  {pub_path}: {public.hex()}")
        return 0
