"""``python -m e2e.vectors``: check vector files, write the project's own, or print the JSON Schema.

``check [--json] FILE...`` recomputes every case of every file and reports **every** case and
field that differs, in every file.  The exit status is 0 when all match, 1 when some case differs,
and 2 when a file cannot be read as a vector file (unreadable, bad JSON, unknown format, version or
kind, a malformed field), which takes precedence.  Without ``--json`` it prints one summary line on
standard output when all match, and otherwise one line per mismatch
(``FILE: MISMATCH in case 'NAME': FIELD differs: expected …, computed …``) or per invalid file
(``FILE: not a valid vector file: …``) on standard error, then a summary there.  With ``--json``
it prints one JSON report on standard output instead (see ``docs/vectors.md``) and nothing on
standard error, for CI.

``generate [--out DIR]`` writes every file the generator makes (default ``tests/vectors``),
replacing files of the same name.  ``schema [--out FILE]`` prints the format's JSON Schema, or
writes it.

This is the one place of the vector tooling that touches files; the rest is sans-I/O.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from e2e.vectors import Mismatch, VectorFormatError, check_cases
from e2e.vectors.generate import generate_all, render

EXIT_MISMATCH = 1
EXIT_FORMAT = 2
REPORT_FORMAT = "e2e-vectors-report"
REPORT_VERSION = 1


def _generator_version() -> str:
    try:
        return f"e2e-relay {metadata.version('e2e-relay')}"
    except metadata.PackageNotFoundError:
        return "e2e-relay (not installed)"


@dataclass
class _FileResult:
    """One file's outcome: status ``ok``, ``mismatch`` or ``invalid``."""

    path: str
    status: str
    error: str | None = None
    kind: str | None = None
    version: int | None = None
    cases: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def failed_cases(self) -> int:
        return len({mismatch.case for mismatch in self.mismatches})

    def report(self) -> dict[str, object]:
        entry: dict[str, object] = {"path": self.path, "status": self.status}
        if self.error is not None:
            entry["error"] = self.error
        else:
            entry.update(
                kind=self.kind,
                version=self.version,
                cases=self.cases,
                failed_cases=self.failed_cases,
                mismatches=[
                    {"case": m.case, "field": m.field, "expected": m.expected, "actual": m.actual}
                    for m in self.mismatches
                ],
            )
        return entry


def _check_file(path: str) -> _FileResult:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        return _FileResult(path, "invalid", f"cannot read: {error.strerror or error}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _FileResult(path, "invalid", f"not valid JSON: {error}")
    try:
        count, mismatches = check_cases(document)
    except VectorFormatError as error:
        return _FileResult(path, "invalid", f"not a valid vector file: {error}")
    return _FileResult(
        path,
        "mismatch" if mismatches else "ok",
        kind=document["kind"],
        version=document["version"],
        cases=count,
        mismatches=mismatches,
    )


def check(paths: Sequence[str], as_json: bool = False) -> int:
    results = [_check_file(path) for path in paths]
    invalid = [result for result in results if result.status == "invalid"]
    failing = [result for result in results if result.status == "mismatch"]
    code = EXIT_FORMAT if invalid else EXIT_MISMATCH if failing else 0
    total = sum(result.cases for result in results)
    mismatches = sum(len(result.mismatches) for result in results)
    failed_cases = sum(result.failed_cases for result in results)
    if as_json:
        report = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "ok": code == 0,
            "exit_status": code,
            "cases": total,
            "failed_cases": failed_cases,
            "mismatches": mismatches,
            "invalid_files": len(invalid),
            "files": [result.report() for result in results],
        }
        print(json.dumps(report, indent=2, default=repr))
        return code
    for result in results:
        if result.error is not None:
            print(f"{result.path}: {result.error}", file=sys.stderr)
        for mismatch in result.mismatches:
            print(f"{result.path}: MISMATCH in {mismatch}", file=sys.stderr)
    if code == 0:
        print(f"ok: {total} cases in {len(paths)} files match")
    else:
        print(
            f"FAILED: {mismatches} mismatches in {failed_cases} cases of {len(failing)} files, "
            f"{len(invalid)} invalid files ({total} cases checked)",
            file=sys.stderr,
        )
    return code


def generate(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    files = generate_all(_generator_version())
    for name, document in files.items():
        (out / name).write_text(render(document), encoding="utf-8")
    print(f"wrote {len(files)} files to {out}")
    return 0


def write_schema(out: Path | None) -> int:
    from e2e.vectors.schema import schema

    text = render(schema())
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.vectors", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="recompute every case of the given files")
    check_parser.add_argument("--json", action="store_true", help="print a JSON report on standard output")
    check_parser.add_argument("files", nargs="+", metavar="FILE")
    generate_parser = commands.add_parser("generate", help="write the project's vector files")
    generate_parser.add_argument("--out", type=Path, default=Path("tests/vectors"), metavar="DIR")
    schema_parser = commands.add_parser("schema", help="print (or write) the format's JSON Schema")
    schema_parser.add_argument("--out", type=Path, default=None, metavar="FILE")
    arguments = parser.parse_args(argv)
    if arguments.command == "check":
        return check(arguments.files, arguments.json)
    if arguments.command == "schema":
        return write_schema(arguments.out)
    return generate(arguments.out)


if __name__ == "__main__":
    sys.exit(main())
