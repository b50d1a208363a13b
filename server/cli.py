"""The ``e2e-relay`` command: run a relay on a SQLite file until SIGINT or SIGTERM.

Every field of :class:`server.limits.Limits` is an option (``--max-body-bytes``,
``--auth-timeout``, ...), so an operator can tighten or relax any bound without code.  Logs go
to standard error, one line per event, metadata only.  On SIGINT or SIGTERM the relay stops
accepting, closes every connection with 1001 (going away), lets pending commits finish and closes
the database, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from server.limits import Limits
from server.relay import Relay
from server.sqlite_store import SQLiteStore
from server.stores import store_from_url

__all__ = ["DEFAULT_DB", "build_parser", "main", "run"]

DEFAULT_DB = "e2e-relay.sqlite3"


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-relay", description="A store-and-forward relay for end-to-end encrypted messages."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any free one (default: %(default)s)"
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
            help="(default: %(default)s)",
        )
    return parser


async def run(args: argparse.Namespace) -> None:
    """Start the relay described by ``args`` and serve until a stop signal."""
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    store = store_from_url(args.store) if args.store else SQLiteStore(args.db)
    relay = Relay(store, limits, origin=args.origin)
    blob_service = await _blob_service(args, relay)
    await relay.start(args.host, args.port)
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
    asyncio.run(run(args))
    return 0
