"""`xrtc sign`: sign a bundle with an Ed25519 key (format 1.1; formats/xrtpkg.md, "Signature")."""

from __future__ import annotations

import logging
import os
import stat

from ..errors import IncompatibleError, OutputExistsError, UsageError, XrtcError

log = logging.getLogger("xrtc.sign")


def write_atomic(path: str, data: bytes, force: bool, mode: int | None = None) -> None:
    """Writes ``data`` to ``path`` through a temporary file renamed over it: ``path`` is never half-written."""
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never clobbers
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class Sign:
    """Sign a .xrtpkg bundle with an Ed25519 private key (from `xrtc keygen`).

    The bundle is fully verified first, then rewritten as format 1.1 with the SIGNED header flag and a 128-byte
    signature trailer: Ed25519 over the SHA-256 of everything before the trailer. In place by default (atomic
    replace); -o writes a new file instead. Re-signing a signed bundle replaces its signature. Loaders given the
    matching NAME.pub as a trusted key accept it; a 1.0-only runtime cannot read signed bundles.
    """

    name = "sign"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", metavar="BUNDLE.xrtpkg", help="the bundle to sign")
        parser.add_argument("--key", required=True, metavar="NAME.key", help="the private key (PKCS#8 PEM)")
        parser.add_argument("-o", "--output", metavar="OUT.xrtpkg", help="write the signed bundle here instead of "
                            "replacing BUNDLE")
        parser.add_argument("--force", action="store_true", help="overwrite OUT.xrtpkg if it exists")

    def run(self, args) -> int:
        import xrtpkg

        try:
            key = xrtpkg.load_private_key(args.key)
        except FileNotFoundError as err:
            raise UsageError(f"--key {args.key}: no such file (create a key pair with `xrtc keygen -o NAME`)") from err
        except OSError as err:
            raise XrtcError(f"--key {args.key}: cannot read: {err.strerror or err}") from err
        except ValueError as err:
            raise UsageError(f"--key {args.key}: {err}") from err
        out = args.output or args.bundle
        in_place = args.output is None or os.path.abspath(out) == os.path.abspath(args.bundle)
        if not in_place and not args.force and os.path.lexists(out):
            raise OutputExistsError(f"{out} already exists; pass --force to overwrite it")
        try:
            with open(args.bundle, "rb") as f:
                data = f.read()
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode) if in_place else None
        except FileNotFoundError as err:
            raise XrtcError(f"{args.bundle}: no such file") from err
        except IsADirectoryError as err:
            raise XrtcError(f"{args.bundle}: is a folder, not a bundle") from err
        except OSError as err:
            raise XrtcError(f"{args.bundle}: cannot read: {err.strerror or err}") from err
        try:
            signed = xrtpkg.sign(data, key)  # verifies the bundle fully first
        except xrtpkg.FormatError as err:
            kind = IncompatibleError if err.status == "INCOMPATIBLE" else XrtcError
            raise kind(f"{args.bundle}: {err.status}: {err.message}") from err
        try:
            write_atomic(out, signed, force=in_place or args.force, mode=mode)
        except FileExistsError as err:
            raise OutputExistsError(f"{out} already exists; pass --force to overwrite it") from err
        except OSError as err:
            raise XrtcError(f"cannot write {out}: {err.strerror or err}") from err
        signer = xrtpkg.public_key_of(key).hex()
        print(f"signed {out} ({len(signed)} bytes, format 1.1) with key {signer}")
        return 0
