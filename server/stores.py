"""Choosing a storage backend from a URL: ``sqlite:PATH`` or ``postgresql://…``.

This is the one place that knows every backend.  The relay is written against
:class:`server.store.Store` alone; the command line (``e2e-relay --store URL``), the tests and the
benchmarks name a backend by URL and get a store that has not been opened yet.

* ``sqlite:PATH`` (or a plain path): :class:`server.sqlite_store.SQLiteStore`, one file, one node.
* ``postgresql://USER@HOST:PORT/DATABASE`` (or ``postgres://``):
  :class:`server.pg_store.PostgresStore`, shared by any number of relay nodes.  It needs the
  ``postgres`` extra (asyncpg), imported only when such a URL is used.  Four query parameters
  tune the node and are removed before the URL reaches the driver: ``pool_size`` (connections of
  this node), ``poll_interval`` (seconds; the longest a lost wake-up can delay a delivery),
  ``partitions`` (notification channels; the same on every node) and ``batch_limit`` (sends or
  acknowledgements per transaction).  Any other parameter is the driver's (e.g. ``sslmode``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from server.sqlite_store import SQLiteStore
from server.store import Store

__all__ = ["describe", "store_from_url"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_POSTGRES_OPTIONS: dict[str, Callable[[str], Any]] = {
    "pool_size": int,
    "poll_interval": float,
    "partitions": int,
    "batch_limit": int,
}


def store_from_url(url: str) -> Store:
    """Return an unopened store for ``url``; raises ValueError for a URL no backend understands."""
    if url.startswith(_POSTGRES_SCHEMES):
        from server.pg_store import PostgresStore

        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ours = {name: value for name, value in query if name in _POSTGRES_OPTIONS}
        theirs = [(name, value) for name, value in query if name not in _POSTGRES_OPTIONS]
        dsn = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(theirs)))
        try:
            options = {name: _POSTGRES_OPTIONS[name](value) for name, value in ours.items()}
        except ValueError:
            raise ValueError(f"bad store option in {describe(url)!r}") from None
        return PostgresStore(dsn, **options)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        # sqlite:///abs/path and sqlite://rel/path are accepted too, as other tools write them.
        path = path.removeprefix("//")
        if not path:
            raise ValueError("sqlite: needs a file path, e.g. sqlite:relay.sqlite3")
        return SQLiteStore(path)
    if "://" in url:
        raise ValueError(f"unknown store URL scheme in {describe(url)!r}; use sqlite:PATH or postgresql://…")
    return SQLiteStore(url)


def describe(url: str) -> str:
    """``url`` with any password removed, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, where = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{where}"
