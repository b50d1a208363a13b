"""The throwaway PostgreSQL server of the tests and benchmarks (server.testing.pg)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from server.testing.pg import PostgresUnavailableError, find_bindir, start_cluster


def test_a_cluster_serves_on_loopback_and_leaves_nothing_behind() -> None:
    cluster = start_cluster()
    process = cluster.process
    assert process is not None
    assert cluster.host == "127.0.0.1"
    assert cluster.psql("SELECT current_setting('listen_addresses')").strip() == "127.0.0.1"
    if os.geteuid() == 0:
        # PostgreSQL refuses root, so as root the server runs as an unprivileged account.
        assert cluster.psql("SELECT 1").strip() == "1"
        assert Path(f"/proc/{process.pid}").stat().st_uid != 0
    dsn = cluster.create_database("scratch")
    assert dsn.endswith("/scratch")
    cluster.stop()
    assert process.poll() is not None
    assert not cluster.root.exists()
    with pytest.raises(OSError), socket.create_connection((cluster.host, cluster.port), timeout=1):
        pass
    cluster.stop()  # a second stop is harmless


def test_binaries_the_unprivileged_account_cannot_reach_are_copied_first(tmp_path, monkeypatch) -> None:
    installed = find_bindir()
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    package = installed.parent.parent

    def skip(directory: str, names: list[str]) -> set[str]:
        if Path(directory).name == "bin":
            return {name for name in names if name not in ("initdb", "postgres", "psql")}
        return {name for name in names if name in ("include", "doc") or name.endswith(".a")}

    shutil.copytree(package, hidden / package.name, symlinks=True, ignore=skip)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, hidden / libs.name, symlinks=True)
    monkeypatch.setenv("E2E_PG_BINDIR", str(hidden / package.name / installed.parent.name / installed.name))
    with start_cluster() as cluster:
        assert cluster.psql("SELECT 40 + 2").strip() == "42"
        if os.geteuid() == 0:
            assert cluster.root in cluster.bindir.parents


def test_missing_binaries_are_an_error_not_a_skip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("E2E_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match="initdb"):
        start_cluster()


def test_the_command_line_runs_a_command_against_a_fresh_cluster(tmp_path) -> None:
    script = "import os, sys; print(os.environ['E2E_PG_DSN']); sys.exit(3)"
    result = subprocess.run(
        [sys.executable, "-m", "server.testing.pg", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("postgresql://postgres@127.0.0.1:")
