"""The ``e2e-blobs`` command: the blob service beside one or more relays, until SIGINT or SIGTERM.

The relays that issue upload tokens and this service share one token key file
(``--token-key``; created with mode 0600 if it does not exist): start each relay with
``e2e-relay --blob-token-key FILE --blob-url URL`` and this service with the same FILE.  Storage
is a directory (``--dir``, the filesystem backend) or, for several nodes sharing blobs, a
PostgreSQL URL (``--store postgresql://…``).  Every field of :class:`server.blobs.BlobLimits` is
an option.  Logs go to standard error, metadata only; the first line names the URL it listens on.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from e2e import __version__
from server.blob_store import BlobStore, FilesystemBlobStore
from server.blob_tokens import BlobTokens, load_or_create_key
from server.blobs import BlobLimits, BlobService

__all__ = ["build_parser", "main", "blob_store_from_url"]


def blob_store_from_url(url: str) -> BlobStore:
    """An unopened blob store: a PostgreSQL URL, or a directory for the filesystem backend."""
    if url.startswith(("postgresql://", "postgres://")):
        from server.blob_pg import PostgresBlobStore

        return PostgresBlobStore(url)
    return FilesystemBlobStore(url.removeprefix("file:"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-blobs", description="The blob service for encrypted attachments (docs/attachments.md)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8766, help="port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument("--dir", default="e2e-blobs", help="blob directory (default: %(default)s)")
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="postgresql://… to share blobs between nodes; overrides --dir",
    )
    parser.add_argument(
        "--token-key", required=True, metavar="FILE", help="the upload-token key file shared with the relays"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    limits = parser.add_argument_group("limits")
    for f in dataclasses.fields(BlobLimits):
        kind: Any = type(f.default)
        limits.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=f.default,
            metavar=kind.__name__.upper(),
            help="(default: %(default)s)",
        )
    return parser


async def run(args: argparse.Namespace) -> None:
    limits = BlobLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BlobLimits)})
    store = blob_store_from_url(args.store or args.dir)
    service = BlobService(store, BlobTokens(load_or_create_key(args.token_key)), limits)
    await service.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await service.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
