"""Test-vector files: their format, and the checker that recomputes every case with this project's code.

What this package owns
----------------------
A vector file is one JSON object::

    {"format": "e2e-vectors", "version": 1, "kind": "<kind>", "provenance": "<where it comes from>",
     "cases": [{"name": "<unique name>", "inputs": {...}, "expected": {...}}, ...]}

Byte strings are lowercase hexadecimal; counts, ids and indices are JSON integers.  Each kind
(:data:`KINDS`) names the inputs it reads and the outputs it computes; ``docs/vectors.md`` lists
them.  :func:`check_document` recomputes every case from its inputs and compares the result with
``expected``.  A case may state only some of the outputs (a vector reproduced from elsewhere often
publishes only a few), but never an output the kind does not compute, and never an input the kind
does not read: a misspelt field is a format error, not a silently skipped check.

Two exceptions tell the outcomes apart: :class:`VectorFormatError` (the file is not a valid vector
file: bad JSON, unknown format, version or kind, a missing or malformed field) and
:class:`VectorMismatchError` (a recomputed value differs; it names the case and the field).

Invariants
----------
The checker is sans-I/O like the rest of ``e2e``: it takes parsed JSON and returns or raises.
Reading files and writing them (``python -m e2e.vectors check|generate``) is the job of
``__main__``.  Pinned randomness inside a case is either an input of its own (XEdDSA's 64 bytes,
X3DH's base key) or, for whole conversations, a seed expanded by :class:`SeededRng`, whose
definition is part of the format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from e2e.errors import DecodeError, E2EError

__all__ = [
    "FORMAT",
    "VERSION",
    "VectorFormatError",
    "VectorMismatchError",
    "SeededRng",
    "check_document",
]

FORMAT: Final = "e2e-vectors"
VERSION: Final = 1


class VectorFormatError(DecodeError):
    """A vector file that cannot be checked: malformed JSON, unknown format/version/kind, bad field."""


class VectorMismatchError(E2EError):
    """A case whose recomputed output differs from the expected one."""

    def __init__(self, case: str, field: str, expected: object, actual: object) -> None:
        super().__init__(f"case {case!r}: {field} differs: expected {expected!r}, computed {actual!r}")
        self.case = case
        self.field = field
        self.expected = expected
        self.actual = actual


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

    Raises :class:`VectorFormatError` or, at the first case that differs,
    :class:`VectorMismatchError`.
    """
    from e2e.vectors.kinds import KINDS  # The kinds import the whole core; load them on use.

    if not isinstance(document, Mapping):
        raise VectorFormatError("a vector file is a JSON object")
    if document.get("format") != FORMAT:
        raise VectorFormatError(f"not an {FORMAT} file (format is {document.get('format')!r})")
    if document.get("version") != VERSION:
        raise VectorFormatError(
            f"unknown {FORMAT} version {document.get('version')!r} (this checker reads {VERSION})"
        )
    unknown = set(document) - {"format", "version", "kind", "provenance", "cases"}
    if unknown:
        raise VectorFormatError(f"unknown top-level fields {sorted(unknown)}")
    provenance = document.get("provenance")
    if not isinstance(provenance, str) or not provenance.strip():
        raise VectorFormatError("a vector file states its provenance")
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise VectorFormatError(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    cases = document.get("cases")
    if not isinstance(cases, list) or not cases:
        raise VectorFormatError("a vector file has a non-empty list of cases")
    names: set[str] = set()
    for case in cases:
        if not isinstance(case, Mapping) or set(case) != {"name", "inputs", "expected"}:
            raise VectorFormatError("a case is an object with exactly name, inputs and expected")
        name = case["name"]
        if not isinstance(name, str) or not name or name in names:
            raise VectorFormatError(f"case names are unique non-empty strings ({name!r})")
        names.add(name)
        if not isinstance(case["inputs"], Mapping) or not isinstance(case["expected"], Mapping):
            raise VectorFormatError(f"case {name!r}: inputs and expected are objects")
        if not case["expected"]:
            raise VectorFormatError(f"case {name!r}: expected states at least one output")
        try:
            actual = KINDS[kind](case["inputs"])
        except VectorFormatError as error:
            raise VectorFormatError(f"case {name!r}: {error}") from None
        except E2EError as error:
            raise VectorMismatchError(
                name, "computation", "success", f"{type(error).__name__}: {error}"
            ) from None
        _compare(name, "", case["expected"], actual)
    return len(cases)


def _compare(case: str, path: str, expected: object, actual: object) -> None:
    """Compare ``expected`` with ``actual`` field by field; only fields ``expected`` states count."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            raise VectorMismatchError(case, path or "output", expected, actual)
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                raise VectorFormatError(f"case {case!r}: the kind computes no output {where!r}")
            _compare(case, where, value, actual[key])
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise VectorMismatchError(case, f"{path} (length)", len(expected), _length(actual))
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            _compare(case, f"{path}[{index}]", want, got)
    elif type(expected) is not type(actual) or expected != actual:
        raise VectorMismatchError(case, path, expected, actual)


def _length(value: object) -> object:
    return len(value) if isinstance(value, list) else value
