"""Shared by the program tests: a pseudo-terminal driver, a scan for leftover processes, an environment."""

from __future__ import annotations

import os
import re
import select
import sys
import time
from pathlib import Path

import pexpect

from client.demo.relay import RelayProcess

__all__ = ["Terminal", "processes_mentioning", "program_environment"]


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Every running process (other than zombies) whose command line contains ``text``."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append((int(entry.name), command))
    return found


def program_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a program under test runs in: temporary files under ``tmp_path``, UTF-8 output."""
    environment = dict(os.environ)
    environment.update(TMPDIR=str(tmp_path), PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", **extra)
    return environment


# Terminal control sequences prompt_toolkit writes (CSI, OSC, charset and keypad switches).
_CONTROL = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>]|\x1b[()][0-9A-Za-z]"
)


class Terminal:
    """A program in a real pseudo-terminal (pexpect), read as plain text with control sequences removed."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, size: tuple[int, int] = (40, 120)
    ) -> None:
        self.child = pexpect.spawn(
            argv[0], argv[1:], env=env, cwd=str(cwd), encoding="utf-8", dimensions=size
        )
        self.text = ""
        """What the program wrote, control sequences removed."""
        self.raw = ""
        """What the program wrote, exactly (decoded as UTF-8)."""
        self._position = 0

    def _read(self, wait: float) -> None:
        try:
            while True:
                chunk = self.child.read_nonblocking(65536, timeout=wait)
                self.raw += chunk
                self.text += _CONTROL.sub("", chunk).replace("\r", "")
                wait = 0.01
        except (pexpect.TIMEOUT, pexpect.EOF):
            return

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until ``pattern`` appears after the previous match; fail with the screen's recent text."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.text, self._position)
            if match:
                self._position = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not appear; recent output:\n{self.text[-2500:]}")
            self._read(0.1)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def type_bytes(self, data: bytes) -> None:
        """Write bytes as the keyboard would, whatever they are (pasted binary, for instance)."""
        os.write(self.child.child_fd, data)

    def paste(self, text: str, chunk: int = 4096) -> None:
        """Type ``text`` as a terminal without bracketed paste delivers a paste: as fast as the
        program reads it, while reading what it writes (so that neither side blocks the other)."""
        data = text.encode("utf-8")
        while data:
            _, writable, _ = select.select([], [self.child.child_fd], [], 0.05)
            if writable:
                written = os.write(self.child.child_fd, data[:chunk])
                data = data[written:]
            self._read(0.0)

    def drain(self, wait: float = 0.5) -> None:
        """Read whatever the program writes for ``wait`` seconds."""
        self._read(wait)

    def wait_exit(self, timeout: float = 20.0) -> int:
        self.child.expect(pexpect.EOF, timeout=timeout)
        rest = self.child.before or ""
        self.raw += rest
        self.text += _CONTROL.sub("", rest).replace("\r", "")
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -1

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close(force=True)


ROOT = Path(__file__).resolve().parents[2]


class Chats:
    """Starts chat programs against one relay and closes whatever is left at the end."""

    def __init__(self, tmp_path: Path, relay: RelayProcess) -> None:
        self.tmp_path = tmp_path
        self.relay = relay
        # prompt_toolkit asks the terminal where its cursor is; pexpect does not answer.
        self.env = program_environment(tmp_path, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
        self.terminals: list[Terminal] = []

    @property
    def url(self) -> str:
        assert self.relay.url is not None
        return self.relay.url

    def start(self, name: str, *options: str, state: bool = True, relay: str | None = None) -> Terminal:
        argv = [sys.executable, "-m", "client.chat", name, "--relay", relay or self.url]
        if state:
            argv += ["--state", str(self.tmp_path / f"{name}.sqlite3")]
        terminal = Terminal([*argv, *options], self.env, ROOT)
        self.terminals.append(terminal)
        return terminal

    def close(self) -> None:
        for terminal in self.terminals:
            terminal.close()
