"""What the program tests share: a scan for processes left behind, and a clean environment."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["processes_mentioning", "program_environment"]


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
