"""The package as installed: one version everywhere, --version on every program, typed, described."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import e2e
from server.cli import build_parser
from server.limits import Limits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("code", "program"),
    [
        ("from server.cli import main", "e2e-relay"),
        ("from client.chat import main", "e2e-chat"),
        ("from client.demo import main", "e2e-demo"),
        ("from server.blob_cli import main", "e2e-blobs"),
        ("from client.bot import main", "e2e-bot"),
        ("from client.directory import main", "e2e-directory"),
    ],
)
def test_every_program_says_its_version(code: str, program: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; sys.exit(main(['--version']))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{program} {e2e.__version__}"


def test_the_version_has_one_source() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", e2e.__version__)
    assert importlib.metadata.version("e2e-relay") == e2e.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "e2e.__version__"}
    # The console scripts are installed under their names.
    scripts = {entry.name for entry in importlib.metadata.entry_points(group="console_scripts")}
    programs = {"e2e-relay", "e2e-chat", "e2e-demo", "e2e-blobs", "e2e-bot", "e2e-directory"}
    assert programs <= scripts
    project_scripts = set(project["project"]["scripts"])
    # A new program joins test_every_program_says_its_version.
    assert project_scripts == programs


def test_the_core_ships_its_types_and_the_metadata_describes_the_project() -> None:
    assert (ROOT / "e2e" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["e2e"]
    metadata = importlib.metadata.metadata("e2e-relay")
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and "Topic :: Security :: Cryptography" in classifiers
    # The project has no public address yet: no URL is invented for it.
    assert metadata.get_all("Project-URL") is None


def test_every_limit_flag_says_what_it_bounds() -> None:
    actions = {action.dest: action for action in build_parser()._actions}
    for field in dataclasses.fields(Limits):
        described = str(actions[field.name].help).split("(default")[0].strip()
        assert len(described.split()) >= 4, f"--{field.name.replace('_', '-')} does not say what it bounds"
    done = subprocess.run(
        [sys.executable, "-m", "server", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "--max-body-bytes INT" in done.stdout
    assert "Largest message ciphertext (decoded)" in " ".join(done.stdout.split())
