"""Test helpers for the vector files under ``tests/vectors`` and their command line
(``python -m e2e.vectors``), shared by ``test_vectors.py`` and ``test_vectors_v2.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from e2e.vectors.__main__ import main

VECTORS = Path(__file__).parent / "vectors"
FILES = sorted(VECTORS.glob("*.json"))


def load_vectors(name: str) -> dict:
    """The vector file ``name``, parsed."""
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def write_document(tmp_path: Path, document: object, name: str = "copy.json") -> Path:
    """``document`` written as JSON to ``tmp_path / name``."""
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_cli(capsys, *arguments: str) -> tuple[int, str, str]:
    """The command line run in-process: its exit code, standard output and standard error."""
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
