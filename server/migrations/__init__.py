"""Versioned schema migrations for the PostgreSQL store, and the runner that applies them.

Theory
------
The schema of :mod:`server.pg_store` is the sum of the SQL files in this package, applied in order:
``0001_initial.sql``, ``0002_….sql`` and so on.  A file, once released, is never edited; a change to
the schema is a new file.  The database records what it has applied in ``schema_version`` (version,
name, SHA-256 of the file, time), so the runner can tell a fresh database, a database that is behind,
one that is current, and two kinds it must refuse: one that a newer relay has migrated past this
code's knowledge, and one whose recorded checksum differs from the file of the same version (an
edited migration).

Invariants
----------
* Each migration runs in its own transaction together with its ``schema_version`` row: it is applied
  entirely or not at all.
* Running the migrations again is a no-op, and so is running them from several relay nodes at the
  same moment: the runner holds a session-level advisory lock while it works, so the nodes take turns
  and each later one finds everything applied.
* Versions are the numbers 1, 2, 3, … without gaps or repeats; anything else is a packaging error and
  is refused before the database is touched.

What this module does not know
-------------------------------
What the tables mean (see :mod:`server.pg_store`) or how to connect (it is handed an open asyncpg
connection).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

__all__ = ["Migration", "MigrationError", "load_migrations", "migrate", "schema_version"]

# An arbitrary, fixed 64-bit key for pg_advisory_lock: every node of a cluster uses the same one.
MIGRATION_LOCK_KEY = 0x6532_655F_6D69_6772

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk or the database's recorded history cannot be reconciled."""


@dataclass(frozen=True)
class Migration:
    """One schema step: its version number, short name and SQL text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text, recorded when applied so that later edits are noticed."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations() -> list[Migration]:
    """Read every ``NNNN_name.sql`` of this package, in version order; check 1..N without gaps."""
    migrations = []
    for entry in importlib.resources.files(__name__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        migrations.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    _check_sequence(migrations)
    return migrations


def _check_sequence(migrations: list[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration versions must run 1, 2, 3, …; found {migration.version}")


_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied version, or 0 for a database that has never been migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the database up to the newest migration; return the versions applied by this call.

    Raises :class:`MigrationError` if the database is ahead of ``migrations`` or an applied
    migration's checksum differs from its file.
    """
    known = load_migrations() if migrations is None else migrations
    _check_sequence(known)
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        recorded = {
            int(row["version"]): str(row["checksum"])
            for row in await conn.fetch("SELECT version, checksum FROM schema_version")
        }
        by_version = {m.version: m for m in known}
        unknown = sorted(set(recorded) - set(by_version))
        if unknown:
            raise MigrationError(
                f"the database has schema versions {unknown} that this relay does not know; "
                "run a newer relay or restore a matching database"
            )
        for version, checksum in recorded.items():
            if by_version[version].checksum != checksum:
                raise MigrationError(f"migration {version} was changed after it was applied")
        for migration in known:
            if migration.version in recorded:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now
