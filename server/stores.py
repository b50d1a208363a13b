"""Choosing a storage backend from a URL: ``sqlite:PATH`` or ``postgresql://…``.

This is the one place that knows every backend.  The relay is written against
:class:`server.store.Store` alone; the command line (``e2e-relay --store URL``), the tests and the
benchmarks name a backend by URL and get a store that has not been opened yet.

* ``sqlite:PATH`` (or a plain path): :class:`server.sqlite_store.SQLiteStore`, one file, one node.
* ``postgresql://USER@HOST:PORT/DATABASE`` (or ``postgres://``):
  :class:`server.pg_store.PostgresStore`, shared by any number of relay nodes.  It needs the
  ``postgres`` extra (asyncpg), imported only when such a URL is used.
"""

from __future__ import annotations

from server.sqlite_store import SQLiteStore
from server.store import Store

__all__ = ["describe", "store_from_url"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def store_from_url(url: str) -> Store:
    """Return an unopened store for ``url``; raises ValueError for a URL no backend understands."""
    if url.startswith(_POSTGRES_SCHEMES):
        from server.pg_store import PostgresStore

        return PostgresStore(url)
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
