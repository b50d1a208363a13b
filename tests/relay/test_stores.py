"""Choosing a storage backend by URL (server.stores), as ``e2e-relay --store`` does."""

from __future__ import annotations

import pytest

from server.pg_store import PostgresStore
from server.sqlite_store import SQLiteStore
from server.stores import describe, store_from_url


def test_sqlite_urls_and_plain_paths_name_a_sqlite_file(tmp_path) -> None:
    for url, path in [
        (f"sqlite:{tmp_path}/a.db", f"{tmp_path}/a.db"),
        (f"sqlite://{tmp_path}/b.db", f"{tmp_path}/b.db"),
        ("sqlite:relative.db", "relative.db"),
        ("plain.sqlite3", "plain.sqlite3"),
    ]:
        store = store_from_url(url)
        assert isinstance(store, SQLiteStore)
        assert repr(store) == f"SQLiteStore({path!r})"


def test_postgresql_urls_keep_the_drivers_options_and_take_the_nodes() -> None:
    store = store_from_url(
        "postgresql://relay:secret@db:5433/relay?sslmode=disable&pool_size=3&poll_interval=0.5"
    )
    assert isinstance(store, PostgresStore)
    shown = repr(store)
    assert "db:5433/relay?sslmode=disable" in shown
    assert "pool_size" not in shown and "poll_interval" not in shown
    assert "secret" not in shown
    assert isinstance(store_from_url("postgres://db/relay"), PostgresStore)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:",
        "mysql://db/relay",
        "postgresql://db/relay?pool_size=many",
        "postgresql://db/relay?partitions=",
    ],
)
def test_urls_no_backend_understands_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        store_from_url(url)


def test_described_urls_carry_no_password() -> None:
    assert describe("postgresql://relay:secret@db:5432/relay") == "postgresql://relay@db:5432/relay"
    assert describe("postgresql://db/relay") == "postgresql://db/relay"
    assert describe("sqlite:relay.db") == "sqlite:relay.db"
