"""``python -m e2e.vectors``: check vector files, or write the project's own.

``check FILE...`` recomputes every case of every file.  It exits 0 and prints one summary line
when all match; 1, naming the file, the case and the field, at the first case that differs; 2 when
a file cannot be read as a vector file (unreadable, bad JSON, unknown format, version or kind).
Messages about failures go to standard error.

``generate [--out DIR]`` writes every vector file (default ``tests/vectors``), replacing files
of the same name.

This is the one place of the vector tooling that touches files; the rest is sans-I/O.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from e2e.vectors import VectorFormatError, VectorMismatchError, check_document
from e2e.vectors.generate import generate_all, render

EXIT_MISMATCH = 1
EXIT_FORMAT = 2


def _generator_version() -> str:
    try:
        return f"e2e-relay {metadata.version('e2e-relay')}"
    except metadata.PackageNotFoundError:
        return "e2e-relay (not installed)"


def check(paths: Sequence[str]) -> int:
    total = 0
    for path in paths:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror or error}", file=sys.stderr)
            return EXIT_FORMAT
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            print(f"{path}: not valid JSON: {error}", file=sys.stderr)
            return EXIT_FORMAT
        try:
            total += check_document(document)
        except VectorMismatchError as error:
            print(f"{path}: MISMATCH in {error}", file=sys.stderr)
            return EXIT_MISMATCH
        except VectorFormatError as error:
            print(f"{path}: not a valid vector file: {error}", file=sys.stderr)
            return EXIT_FORMAT
    print(f"ok: {total} cases in {len(paths)} files match")
    return 0


def generate(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    files = generate_all(_generator_version())
    for name, document in files.items():
        (out / name).write_text(render(document), encoding="utf-8")
    print(f"wrote {len(files)} files to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.vectors", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="recompute every case of the given files")
    check_parser.add_argument("files", nargs="+", metavar="FILE")
    generate_parser = commands.add_parser("generate", help="write the project's vector files")
    generate_parser.add_argument("--out", type=Path, default=Path("tests/vectors"), metavar="DIR")
    arguments = parser.parse_args(argv)
    if arguments.command == "check":
        return check(arguments.files)
    return generate(arguments.out)


if __name__ == "__main__":
    sys.exit(main())
