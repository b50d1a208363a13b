"""The demo's relay: a real ``e2e-relay`` process, and a read-only window onto its database.

What this module owns
---------------------
* :class:`RelayProcess` starts ``python -m server`` on 127.0.0.1 with port 0 and a SQLite file in
  a directory the caller owns (with the blob service for attachments in the same process, its
  files in ``blobs/`` there), learns the URL it listens on from its ``listening`` log line, and
  stops it (SIGTERM, then SIGKILL if it does not exit in time).  It is a context manager, so the
  relay is stopped however the demo ends.
* :class:`RelayDatabase` opens the relay's SQLite file **read-only** (``mode=ro``) and reads what
  the relay itself stored: queued messages with their sizes and ids, prekey stock, identity keys.
  The demo's middle column comes from here, never from the clients, so what it shows is exactly
  what the relay holds.

Invariants
----------
* Nothing here writes to the relay's database; a read-only connection cannot.
* :meth:`RelayProcess.stop` returns only when the process has exited; ``returncode`` is then set.

What it does not know
---------------------
The relay protocol: it reads rows, it does not speak to the relay.  The table layout it reads is
the SQLite backend's (``server/sqlite_store.py``); if that changes, this is the one place to follow.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["RelayProcess", "RelayDatabase", "StoredRow", "PreKeyStock", "RelayStartError"]

_LISTENING = re.compile(r"\blistening url=(ws://\S+)")


class RelayStartError(RuntimeError):
    """The relay process exited or never said where it listens."""


class RelayProcess:
    """One relay process on 127.0.0.1 with an ephemeral port and its own SQLite file."""

    def __init__(
        self, directory: Path, python: str = sys.executable, port: int = 0, options: Sequence[str] = ()
    ) -> None:
        self.database = directory / "relay.sqlite3"
        self.log = directory / "relay.log"
        self.blobs = directory / "blobs"
        """The blob service's folder: the relay process serves attachments too (``--blobs``)."""
        self.port = port
        self.options = tuple(options)
        """More ``e2e-relay`` options (limits, for instance)."""
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def command(self) -> list[str]:
        return [
            self._python,
            "-m",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.database),
            "--blobs",
            str(self.blobs),
            "--blobs-port",
            "0",
            *self.options,
        ]

    def start(self, timeout: float = 20.0) -> str:
        """Start the relay and return the URL it listens on (a stopped relay may be started again)."""
        # The log may hold an earlier run's lines (a restart appends): only look at what follows.
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            # The relay logs one line per event to standard error; a file never fills up and blocks it.
            self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log.read_bytes()[start:].decode(errors="replace"))
            if match:
                self.url = match.group(1)
                return self.url
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RelayStartError(f"the relay did not start (exit code {self.returncode}):\n{tail}")

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the relay (SIGTERM, its clean shutdown) and wait for it; SIGKILL if it hangs."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One queued message as the relay stored it: ids, addresses, type, and the opaque body."""

    server_id: int
    sender: str
    recipient: str
    client_id: str
    type: int
    body: bytes

    def __repr__(self) -> str:
        return f"StoredRow(server_id={self.server_id}, {self.sender}→{self.recipient}, {len(self.body)} B)"


@dataclass(frozen=True, slots=True)
class PreKeyStock:
    """What the relay holds of one device's prekeys."""

    signed_pre_key_ids: tuple[int, ...]
    one_time_ec: int
    one_time_kem: int
    last_resort_kem: int
    one_time_kyber: int = 0
    last_resort_kyber: int = 0


class RelayDatabase:
    """A read-only connection to the relay's SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)

    def close(self) -> None:
        self._db.close()

    def _rows(self, where: str, parameters: tuple[object, ...]) -> list[StoredRow]:
        rows = self._db.execute(
            "SELECT server_id, sender_account, recipient_account, client_id, type, body FROM messages "  # noqa: S608
            f"WHERE {where} ORDER BY server_id",
            parameters,
        ).fetchall()
        return [StoredRow(*row) for row in rows]

    def message(self, sender: str, client_id: str) -> StoredRow | None:
        """The stored copy of ``sender``'s message ``client_id``, or ``None`` once it was deleted."""
        rows = self._rows("sender_account = ? AND client_id = ?", (sender, client_id))
        return rows[0] if rows else None

    def copies(self, sender: str, client_id: str) -> list[StoredRow]:
        """Every stored copy of ``sender``'s message ``client_id`` (one per device, for a group send)."""
        return self._rows("sender_account = ? AND client_id = ?", (sender, client_id))

    def queue(self, recipient: str) -> list[StoredRow]:
        """Every message waiting for ``recipient``, in the order the relay will push them."""
        return self._rows("recipient_account = ?", (recipient,))

    def identity_key(self, account: str) -> bytes | None:
        row = self._db.execute("SELECT identity_key FROM accounts WHERE account = ?", (account,)).fetchone()
        return bytes(row[0]) if row else None

    def pre_key_stock(self, account: str, device_id: int = 1) -> PreKeyStock:
        """How many prekeys of each kind the relay holds for one device."""
        signed = self._db.execute(
            "SELECT key_id FROM signed_prekeys WHERE account = ? AND device_id = ? AND kind = 'ec' "
            "AND retired_at IS NULL ORDER BY key_id",
            (account, device_id),
        ).fetchall()
        counts = dict(
            self._db.execute(
                "SELECT kind, COUNT(*) FROM one_time_prekeys WHERE account = ? AND device_id = ? "
                "GROUP BY kind",
                (account, device_id),
            ).fetchall()
        )
        last_resort = self._db.execute(
            "SELECT COUNT(*) FROM signed_prekeys WHERE account = ? AND device_id = ? "
            "AND kind = 'kem_last_resort' AND retired_at IS NULL",
            (account, device_id),
        ).fetchone()[0]
        last_resort_kyber = self._db.execute(
            "SELECT COUNT(*) FROM signed_prekeys WHERE account = ? AND device_id = ? "
            "AND kind = 'kyber_last_resort' AND retired_at IS NULL",
            (account, device_id),
        ).fetchone()[0]
        return PreKeyStock(
            tuple(row[0] for row in signed),
            counts.get("ec", 0),
            counts.get("kem", 0),
            last_resort,
            counts.get("kyber", 0),
            last_resort_kyber,
        )

    def message_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
