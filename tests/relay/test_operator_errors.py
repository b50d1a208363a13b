"""Operator mistakes at start-up: one line on standard error with a hint, exit status 2, no traceback.

Each test runs the installed ``e2e-relay`` command as a real process, the way an operator would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.relay.conftest import REPO, Device

E2E_RELAY = Path(sys.executable).with_name("e2e-relay")


def run_relay(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, list[str]]:
    assert E2E_RELAY.exists(), f"the console script is installed beside {sys.executable}"
    done = subprocess.run(
        [str(E2E_RELAY), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.stdout == ""
    return done.returncode, done.stderr.strip().splitlines()


def one_error_line(lines: list[str]) -> str:
    """The single line of a start-up failure."""
    assert len(lines) == 1, lines
    assert lines[0].startswith("e2e-relay: error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, lines = run_relay("--port", str(port), "--db", str(tmp_path / "r.sqlite3"))
    assert status == 2
    line = one_error_line(lines)
    assert f"127.0.0.1:{port}" in line and "in use" in line and "--port" in line


def test_a_database_in_a_folder_that_does_not_exist(tmp_path):
    status, lines = run_relay("--port", "0", "--db", str(tmp_path / "no" / "such" / "dir" / "r.sqlite3"))
    assert status == 2
    line = one_error_line(lines)
    assert "--db" in line and "cannot open" in line and "folder exists" in line


def test_a_database_file_that_is_not_a_database(tmp_path):
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"these are not the pages of a database\n" * 200)
    status, lines = run_relay("--port", "0", "--db", str(garbage))
    assert status == 2
    assert "relay database" in one_error_line(lines)
    assert garbage.read_bytes() == b"these are not the pages of a database\n" * 200


def test_an_unknown_store_scheme(tmp_path):
    status, lines = run_relay("--port", "0", "--store", "mysql://root@localhost/relay")
    assert status == 2
    line = one_error_line(lines)
    assert "unknown store URL scheme" in line and "sqlite:PATH" in line


def test_postgresql_without_the_extra_installed(tmp_path):
    # Python's documented way to make an import fail: a None entry in sys.modules.  sitecustomize
    # runs in the relay process before anything else, so the relay sees no asyncpg at all.
    (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["asyncpg"] = None\n')
    status, lines = run_relay(
        "--port",
        "0",
        "--store",
        "postgresql://relay:secret@127.0.0.1:1/relay",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert status == 2
    line = one_error_line(lines)
    assert "postgres extra" in line and "pip install" in line
    # The password never reaches the terminal.
    assert "secret" not in line


def test_a_postgresql_server_that_is_not_there():
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    status, lines = run_relay("--port", "0", "--store", "postgresql://relay:secret@127.0.0.1:1/relay")
    assert status == 2
    line = one_error_line(lines)
    assert "cannot open the database" in line and "secret" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--write-timeout", "-1"], "--write-timeout"),
        (["--max-outgoing-frames", "0"], "--max-outgoing-frames"),
        (["--frame-rate", "nan"], "--frame-rate"),
        (["--message-ttl", "inf"], "--message-ttl"),
    ],
)
def test_a_limit_out_of_range(tmp_path, args, expected):
    status, lines = run_relay("--port", "0", "--db", str(tmp_path / "r.sqlite3"), *args)
    assert status == 2
    line = one_error_line(lines)
    assert expected in line and "--help" in line
    assert not (tmp_path / "r.sqlite3").exists()


def test_a_port_out_of_range_is_a_usage_error(tmp_path):
    status, lines = run_relay("--port", "70000", "--db", str(tmp_path / "r.sqlite3"))
    assert status == 2
    assert "Traceback" not in "\n".join(lines)
    assert "0 to 65535" in lines[-1]


@pytest.mark.parametrize(
    "origin",
    ["relay.example", "https://relay.example", "wss://relay.example/chat", "wss://relay.example:99999"],
)
def test_an_origin_that_cannot_be_one(tmp_path, origin):
    status, lines = run_relay("--port", "0", "--db", str(tmp_path / "r.sqlite3"), "--origin", origin)
    assert status == 2
    assert "--origin" in one_error_line(lines)


async def test_an_origin_spelt_differently_from_what_clients_dial_still_verifies(relay_process, rng):
    # Clients sign over scheme://host:port as they derive it from the URL they dial (lowercase host,
    # port written out); the relay must check the same bytes whatever spelling the operator used.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = relay_process("--host", "localhost", "--origin", f"WS://LocalHost:{port}/", "--port", str(port))
    await asyncio.to_thread(relay.start)
    alice = Device("alice", 1, rng)
    connection = await alice.register(f"ws://localhost:{port}")
    await connection.ping()
    await connection.close()
    assert f"origin=ws://localhost:{port}" in relay.log_text()
    assert await asyncio.to_thread(relay.terminate) == 0
