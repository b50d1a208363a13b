"""The ``e2e-relay`` command: run a relay on a SQLite file until SIGINT or SIGTERM.

Every field of :class:`server.limits.Limits` is an option (``--max-body-bytes``,
``--auth-timeout``, ...), so an operator can tighten or relax any bound without code.  Logs go
to standard error, one line per event, metadata only.  On SIGINT or SIGTERM the relay stops
accepting, closes every connection with 1001 (going away), lets pending commits finish and closes
the database, then exits 0.

An operator's mistake found at start-up (the port is taken, the database cannot be opened, an
unknown store URL, ``postgresql://`` without the ``postgres`` extra, a limit out of range) is
one line on standard error, ``e2e-relay: error: WHAT; HINT``, and exit status 2, never a
traceback; command-line syntax errors are argparse's, with the same status.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from e2e import __version__
from server.limits import Limits
from server.limits import describe as describe_limits
from server.relay import Relay
from server.sqlite_store import SQLiteStore
from server.store import Store, StoreError
from server.stores import describe, store_from_url

__all__ = ["DEFAULT_DB", "build_parser", "main", "run"]

DEFAULT_DB = "e2e-relay.sqlite3"


EXIT_USAGE = 2
"""The exit status of every start-up mistake, as argparse uses for command-line errors."""


class StartupError(Exception):
    """A mistake in how the relay was started: one line for the operator, with a hint."""


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535; 0 picks a free one)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-relay", description="A store-and-forward relay for end-to-end encrypted messages."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=8765, help="port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument("--db", default=DEFAULT_DB, help="SQLite database file (default: %(default)s)")
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="storage backend: sqlite:PATH, or postgresql://USER@HOST:PORT/DB to run as one node of a "
        "cluster (docs/cluster.md); overrides --db",
    )
    parser.add_argument(
        "--origin",
        default=None,
        help="the URL clients dial, which their proofs are bound to (default: ws://HOST:PORT as bound)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    blobs = parser.add_argument_group("attachments (docs/attachments.md)")
    blobs.add_argument(
        "--blobs",
        default=None,
        metavar="DIR|URL",
        help="serve the blob service in this process, storing blobs in DIR (or a postgresql:// URL)",
    )
    blobs.add_argument(
        "--blobs-port", type=int, default=8766, help="its port, 0 for any (default: %(default)s)"
    )
    blobs.add_argument(
        "--blob-token-key",
        default=None,
        metavar="FILE",
        help="issue upload tokens under this key file (shared with e2e-blobs; created if missing)",
    )
    blobs.add_argument(
        "--blob-url", default=None, help="the blob service URL told to devices with their token"
    )
    parser.add_argument(
        "--directory-key",
        default=None,
        metavar="HEX|FILE",
        help="accept only business-name certificates this directory public key signed (docs/business.md)",
    )
    limits = parser.add_argument_group("limits")
    for f in dataclasses.fields(Limits):
        default = f.default
        kind: Any = type(default)
        if default is None or f.name in ("ping_interval", "ping_timeout"):
            kind = _optional_float
        limits.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=default,
            metavar=kind.__name__.lstrip("_").upper() if kind is not _optional_float else "SECONDS|off",
            help=f"{describe_limits().get(f.name, '')} (default: %(default)s)".lstrip(),
        )
    return parser


def _listen_error(exc: OSError, host: str, port: int) -> StartupError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"cannot listen on {where}: the port is in use; stop what holds it, or choose another "
            "with --port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return StartupError(f"cannot listen on {where}: permission denied; use a port above 1023")
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot listen on {where}: no such local address ({exc.strerror or exc}); check --host"
        )
    return StartupError(f"cannot listen on {where}: {exc.strerror or exc}; check --host and --port")


def _store_of(args: argparse.Namespace) -> tuple[Store, str]:
    """The store the arguments name, unopened, and how to name it in a message."""
    if not args.store:
        return SQLiteStore(args.db), f"--db {args.db}"
    where = f"--store {describe(args.store)}"
    try:
        return store_from_url(args.store), where
    except ModuleNotFoundError as exc:
        raise StartupError(
            f"{where}: PostgreSQL needs the {exc.name or 'asyncpg'} driver, which is not installed; "
            "install the relay with its postgres extra (pip install 'e2e-relay[postgres]')"
        ) from None
    except ValueError as exc:
        raise StartupError(f"{exc} (docs/cluster.md)") from None


async def run(args: argparse.Namespace) -> None:
    """Start the relay described by ``args`` and serve until a stop signal.

    Raises :class:`StartupError` for a mistake found before the relay serves.
    """
    try:
        limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    except ValueError as exc:
        raise StartupError(f"{exc}; see e2e-relay --help") from None
    store, where = _store_of(args)
    try:
        relay = Relay(store, limits, origin=args.origin)
    except ValueError as exc:
        raise StartupError(f"--origin: {exc}; give the URL clients dial") from None
    if args.directory_key is not None:
        relay.business_names.directory_key = _directory_key(args.directory_key)
    try:
        blob_service = await _blob_service(args, relay)
    except OSError as exc:
        raise _listen_error(exc, args.host, args.blobs_port) from None
    try:
        await relay.start(args.host, args.port)
    except (StoreError, OSError) as exc:
        if blob_service is not None:
            await blob_service.close()
        if isinstance(exc, StoreError):
            raise StartupError(
                f"{where}: {exc}; check that the path or URL is right, that its folder exists and is "
                "writable, and that it is a relay database"
            ) from None
        raise _listen_error(exc, args.host, args.port) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await relay.close()
        if blob_service is not None:
            await blob_service.close()


def _directory_key(text: str) -> Any:
    """The directory public key ``--directory-key`` names: 66 hex digits, or a file holding them."""
    from e2e.errors import DecodeError
    from e2e.keys import PublicKey

    if len(text) != 66 and os.path.exists(text):
        try:
            with open(text, encoding="utf-8") as file:
                text = file.read().strip()
        except OSError as exc:
            raise StartupError(f"--directory-key: cannot read {text}: {exc.strerror or exc}") from None
    try:
        return PublicKey.deserialize(bytes.fromhex(text))
    except (ValueError, DecodeError):
        raise StartupError(
            "--directory-key: a directory public key is 66 hex digits or a file holding them; "
            "e2e-directory keygen writes one"
        ) from None


async def _blob_service(args: argparse.Namespace, relay: Relay) -> Any:
    """Give ``relay`` an upload-token issuer and, with ``--blobs``, start the blob service beside it."""
    if args.blobs is None and args.blob_token_key is None:
        return None
    from server.blob_cli import blob_store_from_url
    from server.blob_tokens import TOKEN_KEY_LENGTH, BlobTokens, load_or_create_key
    from server.blobs import BlobService

    key = load_or_create_key(args.blob_token_key) if args.blob_token_key else os.urandom(TOKEN_KEY_LENGTH)
    relay.blob_tokens = BlobTokens(key, url=args.blob_url or "")
    if args.blobs is None:
        return None
    service = BlobService(blob_store_from_url(args.blobs), relay.blob_tokens)
    await service.start(args.host, args.blobs_port)
    return service


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # The websockets library logs handshake failures with tracebacks; our own lines say enough.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        asyncio.run(run(args))
    except StartupError as exc:
        print(f"e2e-relay: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C before the relay served (its signal handlers take over once it listens), for
        # instance while a PostgreSQL server does not answer.
        print("e2e-relay: interrupted while starting", file=sys.stderr)
        return 130
    return 0
