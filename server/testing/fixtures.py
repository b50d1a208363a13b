"""pytest fixtures for tests that need PostgreSQL: one server per session, one database per test.

* ``pg_cluster`` (session): a throwaway server from :mod:`server.testing.pg`, started on first use.
  If it cannot start, every test that asked for it fails with the server's log: a missing database
  is an error of the test environment, never a reason to skip.
* ``pg_template`` (session): a database migrated to the newest schema once, the template of every
  per-test database, so that a test pays for a file copy instead of the migrations.
* ``pg_database`` (function): a factory; each call creates a fresh database from the template and
  returns its DSN.  The databases are dropped when the test ends.

Import them into a ``conftest.py`` to use them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from server.testing.pg import Cluster, start_cluster

__all__ = ["pg_cluster", "pg_database", "pg_template"]

_TEMPLATE = "relay_template"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Cluster) -> str:
    import asyncpg  # type: ignore[import-untyped]

    from server.migrations import migrate

    async def build() -> None:
        conn = await asyncpg.connect(pg_cluster.dsn(_TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    pg_cluster.create_database(_TEMPLATE)
    # A thread of its own, so that asyncio.run leaves the main thread's event loop setup alone.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return _TEMPLATE


@pytest.fixture
def pg_database(pg_cluster: Cluster, pg_template: str) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def create() -> str:
        name = f"relay_test_{os.getpid()}_{next(_numbers)}"
        dsn = pg_cluster.create_database(name, template=pg_template)
        created.append(name)
        return dsn

    yield create
    for name in created:
        pg_cluster.drop_database(name)
