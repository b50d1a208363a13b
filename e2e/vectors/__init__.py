"""Test-vector files: their format, and the checker that recomputes every case with this project's code.

What this package owns
----------------------
A vector file is one JSON object::

    {"format": "e2e-vectors", "version": 1 | 2, "kind": "<kind>", "provenance": "<where it comes from>",
     "cases": [{"name": "<unique name>", "inputs": {...}, "expected": {...}}, ...]}

Byte strings are lowercase hexadecimal; counts, ids and indices are JSON integers.  Each kind
(:data:`e2e.vectors.registry.REGISTRY`) names the inputs it reads, the outputs it computes and the
first format version that has it; ``docs/vectors.md`` describes them and
``docs/vectors.schema.json`` (written by :func:`e2e.vectors.schema.schema`) states the format as
a JSON Schema.  Version 2 adds kinds and three optional fields per case: ``comment``, ``source``
(a URL or citation for that case) and ``flags`` (labels such as Wycheproof's).  Version 1 files
are read as they always were.

:func:`check_cases` recomputes every case from its inputs and compares the result with
``expected``, field by field, collecting **every** difference as a :class:`Mismatch`.  A case may
state only some of the outputs (a vector reproduced from elsewhere often publishes only a few), but
never an output the kind does not compute, and never an input the kind does not read: a misspelt
field is a format error, not a silently skipped check.

Two exceptions tell the outcomes apart: :class:`VectorFormatError` (the file is not a valid vector
file: bad JSON, unknown format, version or kind, a missing or malformed field) and
:class:`VectorMismatchError` (raised by :func:`check_document`; it carries every mismatch).

Invariants
----------
The checker is sans-I/O like the rest of ``e2e``: it takes parsed JSON and returns or raises.
Reading files and writing them (``python -m e2e.vectors check|generate|schema``) is the job of
``__main__``.  Pinned randomness inside a case is either an input of its own (XEdDSA's 64 bytes,
X3DH's base key, the explicit conversation's lists of keys) or, for generated conversations, a
seed expanded by :class:`SeededRng`, whose definition is part of the format.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from e2e.errors import DecodeError, E2EError

__all__ = [
    "FORMAT",
    "VERSION",
    "VERSIONS",
    "VectorFormatError",
    "Mismatch",
    "VectorMismatchError",
    "NOT_COMPUTED",
    "SeededRng",
    "check_cases",
    "check_document",
]

FORMAT: Final = "e2e-vectors"
VERSION: Final = 1
"""The version the generator writes for the kinds version 1 has (their files stay byte for byte)."""
VERSIONS: Final = (1, 2)
"""Every version the checker reads."""

_CASE_FIELDS: Final = {1: frozenset({"name", "inputs", "expected"})}
_CASE_FIELDS[2] = _CASE_FIELDS[1] | {"comment", "source", "flags"}
_FLAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class VectorFormatError(DecodeError):
    """A vector file that cannot be checked: malformed JSON, unknown format/version/kind, bad field."""


@dataclass(frozen=True)
class Mismatch:
    """One recomputed value that differs from the expected one: which case, which field, both values."""

    case: str
    field: str
    expected: object
    actual: object

    def __str__(self) -> str:
        return (
            f"case {self.case!r}: {self.field} differs: expected {self.expected!r}, computed {self.actual!r}"
        )


class VectorMismatchError(E2EError):
    """Cases whose recomputed outputs differ from the expected ones; ``mismatches`` lists every one.

    ``case``, ``field``, ``expected`` and ``actual`` are those of the first mismatch.
    """

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        if not mismatches:
            raise ValueError("a VectorMismatchError carries at least one mismatch")
        super().__init__("; ".join(str(mismatch) for mismatch in mismatches))
        self.mismatches = tuple(mismatches)
        first = self.mismatches[0]
        self.case = first.case
        self.field = first.field
        self.expected = first.expected
        self.actual = first.actual


class SeededRng:
    """The deterministic randomness of conversation vectors.

    Call ``i`` (counting from 0) for ``n`` bytes returns the first ``n`` bytes of
    ``SHA-256(seed ‖ c) ‖ SHA-256(seed ‖ c + 1) ‖ …`` where ``c`` is the number of 32-byte blocks
    all earlier calls consumed, written as 8 bytes big-endian.  Every call starts a fresh block.
    """

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:n]


def check_document(document: object) -> int:
    """Recompute every case of a parsed vector file; return the number of cases checked.

    Raises :class:`VectorFormatError`, or :class:`VectorMismatchError` carrying every mismatch
    of every case.
    """
    count, mismatches = check_cases(document)
    if mismatches:
        raise VectorMismatchError(mismatches)
    return count


def check_cases(document: object) -> tuple[int, list[Mismatch]]:
    """Recompute every case of a parsed vector file: the number of cases and every mismatch found.

    The whole file's structure is checked before any case is computed; a file that is not a
    valid vector file raises :class:`VectorFormatError`.
    """
    from e2e.vectors.registry import REGISTRY  # The kinds import the whole core; load them on use.

    if not isinstance(document, Mapping):
        raise VectorFormatError("a vector file is a JSON object")
    if document.get("format") != FORMAT:
        raise VectorFormatError(f"not an {FORMAT} file (format is {document.get('format')!r})")
    version = document.get("version")
    if type(version) is not int or version not in VERSIONS:
        raise VectorFormatError(
            f"unknown {FORMAT} version {version!r} (this checker reads {', '.join(map(str, VERSIONS))})"
        )
    unknown = set(document) - {"format", "version", "kind", "provenance", "cases"}
    if unknown:
        raise VectorFormatError(f"unknown top-level fields {sorted(unknown)}")
    provenance = document.get("provenance")
    if not isinstance(provenance, str) or not provenance.strip():
        raise VectorFormatError("a vector file states its provenance")
    kind = document.get("kind")
    known = sorted(name for name, spec in REGISTRY.items() if spec.since_version <= version)
    if not isinstance(kind, str) or kind not in known:
        later = " (a kind of a later version)" if isinstance(kind, str) and kind in REGISTRY else ""
        raise VectorFormatError(
            f"unknown kind {kind!r} for version {version}{later} (known: {', '.join(known)})"
        )
    cases = document.get("cases")
    if not isinstance(cases, list) or not cases:
        raise VectorFormatError("a vector file has a non-empty list of cases")
    names: set[str] = set()
    for case in cases:
        _check_case_fields(case, version, names)
    compute, known_outputs = REGISTRY[kind].compute, REGISTRY[kind].outputs
    mismatches: list[Mismatch] = []
    for case in cases:
        name = case["name"]
        try:
            actual = compute(case["inputs"])
        except VectorFormatError as error:
            raise VectorFormatError(f"case {name!r}: {error}") from None
        except E2EError as error:
            mismatches.append(Mismatch(name, "computation", "success", f"{type(error).__name__}: {error}"))
            continue
        _compare(name, "", case["expected"], actual, mismatches, known_outputs)
    return len(cases), mismatches


def _check_case_fields(case: object, version: int, names: set[str]) -> None:
    allowed = _CASE_FIELDS[version]
    if not isinstance(case, Mapping) or not {"name", "inputs", "expected"} <= set(case) <= allowed:
        raise VectorFormatError(
            "a case is an object with name, inputs and expected"
            + (" and optionally comment, source and flags" if version >= 2 else " only")
        )
    name = case["name"]
    if not isinstance(name, str) or not name or name in names:
        raise VectorFormatError(f"case names are unique non-empty strings ({name!r})")
    names.add(name)
    if not isinstance(case["inputs"], Mapping) or not isinstance(case["expected"], Mapping):
        raise VectorFormatError(f"case {name!r}: inputs and expected are objects")
    if not case["expected"]:
        raise VectorFormatError(f"case {name!r}: expected states at least one output")
    for field in ("comment", "source"):
        if field in case and (not isinstance(case[field], str) or not case[field].strip()):
            raise VectorFormatError(f"case {name!r}: {field} is a non-empty string")
    if "flags" in case:
        flags = case["flags"]
        if (
            not isinstance(flags, list)
            or not all(isinstance(flag, str) and _FLAG.fullmatch(flag) for flag in flags)
            or len(set(flags)) != len(flags)
        ):
            raise VectorFormatError(f"case {name!r}: flags is a list of distinct labels ([A-Za-z0-9_.-])")


NOT_COMPUTED: Final = "(not computed)"
"""What a mismatch reports as computed for an output the kind knows but did not produce this time
(for instance the ids of a message that failed to parse)."""


def _compare(
    case: str,
    path: str,
    expected: object,
    actual: object,
    mismatches: list[Mismatch],
    known: frozenset[str] | None = None,
) -> None:
    """Compare ``expected`` with ``actual`` field by field, appending every difference to ``mismatches``.

    Only the fields ``expected`` states count.  At the top level, ``known`` is the kind's list of
    outputs: a field outside it is a format error (a misspelt name must not pass unnoticed); one in
    it that this computation did not produce, and any missing nested field, is a mismatch.
    """
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            mismatches.append(Mismatch(case, path or "output", expected, actual))
            return
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if known is not None and key not in known:
                raise VectorFormatError(f"case {case!r}: the kind computes no output {where!r}")
            if key not in actual:
                mismatches.append(Mismatch(case, where, value, NOT_COMPUTED))
                continue
            _compare(case, where, value, actual[key], mismatches)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            mismatches.append(Mismatch(case, f"{path} (length)", len(expected), _length(actual)))
            return
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            _compare(case, f"{path}[{index}]", want, got, mismatches)
    elif type(expected) is not type(actual) or expected != actual:
        mismatches.append(Mismatch(case, path, expected, actual))


def _length(value: object) -> object:
    return len(value) if isinstance(value, list) else value
