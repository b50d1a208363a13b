"""The ``e2e-relay`` command: run a relay on a SQLite file until SIGINT or SIGTERM.

Every field of :class:`server.limits.Limits` is an option (``--max-body-bytes``,
``--auth-timeout``, ...), so an operator can tighten or relax any bound without code.  Logs go
to standard error, one line per event, metadata only.  On SIGINT or SIGTERM the relay stops
accepting, closes every connection with 1001 (going away), lets pending commits finish and closes
the database, then exits 0.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import inspect
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from e2e import __version__
from server.limits import Limits
from server.relay import Relay
from server.sqlite_store import SQLiteStore
from server.stores import store_from_url

__all__ = ["DEFAULT_DB", "build_parser", "main", "run"]

DEFAULT_DB = "e2e-relay.sqlite3"


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


# What the limits without a docstring of their own in server/limits.py are.
_LIMIT_HELP = {
    "frame_burst": "Frames a connection may send at once before --frame-rate applies.",
    "byte_burst": "Bytes a connection may send at once before --byte-rate applies.",
    "max_connections_per_address": "Concurrent connections from one IP address; more are closed with 1013.",
    "ping_interval": "Seconds between keepalive pings to each connection (off: none).",
    "ping_timeout": "Seconds a ping may wait for its pong before the connection is closed (off: forever).",
    "close_timeout": "Seconds a closing handshake may take before the connection is dropped.",
}


def limit_help() -> dict[str, str]:
    """What each field of :class:`Limits` bounds, for ``--help``: the field's docstring in
    server/limits.py (the one description), else :data:`_LIMIT_HELP`."""
    described = dict(_LIMIT_HELP)
    body = ast.parse(inspect.getsource(Limits)).body[0]
    assert isinstance(body, ast.ClassDef)
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            described[statement.target.id] = " ".join(following.value.value.split())
    return described


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-relay", description="A store-and-forward relay for end-to-end encrypted messages."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    limits = parser.add_argument_group("limits", "every bound the relay enforces (docs/relay-protocol.md)")
    described = limit_help()
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
            help=described.get(f.name, "").replace("%", "%%") + " (default: %(default)s)",
        )
    return parser


async def run(args: argparse.Namespace) -> None:
    """Start the relay described by ``args`` and serve until a stop signal."""
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    store = store_from_url(args.store) if args.store else SQLiteStore(args.db)
    relay = Relay(store, limits, origin=args.origin)
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
