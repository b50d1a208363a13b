"""The ``e2e-directory`` command: the directory key that vouches for business names, and its certificates.

What this module owns
---------------------
The directory's side of verified business names (:mod:`e2e.business_name`), as a program of its
own that never runs inside the relay:

* ``e2e-directory keygen --key FILE`` makes a directory key pair.  The private key goes to
  ``FILE`` (created with mode 0600, refused if it exists), the public key to ``FILE.pub`` and to
  standard output: the one line relay operators publish and clients configure
  (``e2e-chat --directory-key``, ``e2e-relay --directory-key``).
* ``e2e-directory issue --key FILE --account NAME --identity-key HEX --name TEXT [--days N]
  --out CERT`` signs a certificate for one business's account and identity key (the business
  prints its key with ``e2e-bot --print-identity``) and writes its bytes to ``CERT``.
* ``e2e-directory show CERT [--directory-key PUB]`` prints what a certificate says, and whether it
  verifies now when given the public key.

File formats (versioned, never pickled): the private key file is JSON
``{"format": "e2e-directory-key", "version": 1, "private_key": HEX}``; the public key file is one
line, the 33-byte public key in hexadecimal; a certificate file holds the certificate's bytes.

Mistakes (a missing or malformed key file, a name the display-text rule refuses, an identity key
that does not decode) are one line ``e2e-directory: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from e2e import __version__
from e2e.business_name import (
    BusinessName,
    CertificateError,
    decode_certificate,
    issue_certificate,
    verify_certificate,
)
from e2e.errors import DecodeError
from e2e.keys import KeyPair, PrivateKey, PublicKey

__all__ = [
    "KEY_FILE_FORMAT",
    "DirectoryKeyError",
    "load_directory_key",
    "load_directory_public_key",
    "write_directory_key",
    "main",
]

KEY_FILE_FORMAT = "e2e-directory-key"
_KEY_FILE_VERSION = 1
_DAY_MS = 86_400_000


class DirectoryKeyError(Exception):
    """A directory key file that is missing, malformed, or of an unknown version."""


def write_directory_key(path: Path, key: KeyPair) -> None:
    """Write ``key``'s private half to ``path`` (0600, never over an existing file) and its public
    half to ``path.pub``."""
    document = {
        "format": KEY_FILE_FORMAT,
        "version": _KEY_FILE_VERSION,
        "private_key": key.private_key.serialize().hex(),
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DirectoryKeyError(f"{path} exists; a directory key is never overwritten") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(document, file)
        file.write("\n")
    Path(f"{path}.pub").write_text(key.public_key.serialize().hex() + "\n", encoding="utf-8")


def load_directory_key(path: Path) -> KeyPair:
    """The directory key pair in ``path``; :class:`DirectoryKeyError` for anything else."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DirectoryKeyError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError:
        raise DirectoryKeyError(f"{path} is not a directory key file (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise DirectoryKeyError(f"{path} is not a directory key file")
    if document.get("version") != _KEY_FILE_VERSION:
        raise DirectoryKeyError(f"{path}: unknown directory key file version {document.get('version')!r}")
    try:
        raw = bytes.fromhex(str(document.get("private_key")))
        if len(raw) != 32:
            raise ValueError
    except ValueError:
        raise DirectoryKeyError(f"{path}: the private key is 32 bytes in hexadecimal") from None
    return KeyPair(PrivateKey(raw))


def load_directory_public_key(text_or_path: str) -> PublicKey:
    """A directory public key given as its hexadecimal form or as the path of a ``.pub`` file."""
    text = text_or_path.strip()
    candidate = Path(text)
    if len(text) != 66 and candidate.exists():
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise DirectoryKeyError(f"cannot read {candidate}: {error.strerror or error}") from None
    try:
        return PublicKey.deserialize(bytes.fromhex(text))
    except (ValueError, DecodeError):
        raise DirectoryKeyError(
            "a directory public key is 33 bytes in hexadecimal (66 characters), or a file holding them"
        ) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-directory",
        description="Make a directory key and issue verified business-name certificates.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="make a directory key pair")
    keygen.add_argument("--key", required=True, type=Path, help="the private key file to create")
    issue = commands.add_parser("issue", help="sign a business-name certificate")
    issue.add_argument("--key", required=True, type=Path, help="the directory's private key file")
    issue.add_argument("--account", required=True, help="the business's account name on the relay")
    issue.add_argument("--identity-key", required=True, help="its identity public key (66 hex digits)")
    issue.add_argument("--name", required=True, help="the display name to vouch for")
    issue.add_argument(
        "--days", type=int, default=365, help="validity from now, in days (default: %(default)s)"
    )
    issue.add_argument("--out", required=True, type=Path, help="where to write the certificate")
    show = commands.add_parser("show", help="print what a certificate says")
    show.add_argument("certificate", type=Path)
    show.add_argument("--directory-key", default=None, help="verify it now under this public key")
    return parser


def _run(args: argparse.Namespace) -> str:
    now_ms = int(time.time() * 1000)
    if args.command == "keygen":
        key = KeyPair.generate(os.urandom)
        write_directory_key(args.key, key)
        return key.public_key.serialize().hex()
    if args.command == "issue":
        key = load_directory_key(args.key)
        if not 1 <= args.days <= 3660:
            raise DirectoryKeyError("--days is 1 to 3660")
        try:
            identity_key = PublicKey.deserialize(bytes.fromhex(args.identity_key))
        except (ValueError, DecodeError):
            raise DirectoryKeyError("--identity-key is 33 bytes in hexadecimal") from None
        name = BusinessName(args.account, identity_key, args.name, now_ms, now_ms + args.days * _DAY_MS)
        certificate = issue_certificate(key, name, os.urandom)
        args.out.write_bytes(certificate)
        return f"issued {args.out} for {args.account}: {args.name!r}, valid {args.days} days"
    certificate = args.certificate.read_bytes()
    name, _signature = decode_certificate(certificate)
    lines = [
        f"account: {name.account}",
        f"identity key: {name.identity_key.serialize().hex()}",
        f"display name: {name.display_name!r}",
        f"valid: {name.not_before} .. {name.not_after} (ms since the epoch)",
    ]
    if args.directory_key is not None:
        verify_certificate(
            certificate,
            load_directory_public_key(args.directory_key),
            account=name.account,
            identity_key=name.identity_key,
            now_ms=now_ms,
        )
        lines.append("verifies now under the given directory key")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        print(_run(args))
    except (DirectoryKeyError, CertificateError, DecodeError, OSError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        print(f"e2e-directory: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
