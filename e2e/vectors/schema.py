"""The JSON Schema (draft 2020-12) of vector files, written from the kind registry.

``docs/vectors.schema.json`` is what :func:`schema` returns, rendered by ``python -m e2e.vectors
schema``; the test suite checks that the committed file is exactly that and that every vector file
validates against it.  The schema states what a JSON validator can check on its own: the five
top-level fields, the versions, which kinds each version has, the fields of a case (``comment``,
``source`` and ``flags`` only from version 2), and for each kind the names of its inputs and of its
expected outputs.  What it cannot state (that case names are unique, that an input has the length a
key has, that the inputs fit together) the checker checks.
"""

from __future__ import annotations

from e2e.vectors import FORMAT, VERSIONS
from e2e.vectors.registry import REGISTRY

__all__ = ["schema"]

_NON_BLANK = {"type": "string", "pattern": "\\S"}


def _case(version: int) -> dict[str, object]:
    properties: dict[str, object] = {
        "name": {"type": "string", "minLength": 1},
        "inputs": {"type": "object"},
        "expected": {"type": "object", "minProperties": 1},
    }
    if version >= 2:
        properties.update(
            comment=_NON_BLANK,
            source=_NON_BLANK,
            flags={
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
            },
        )
    return {
        "type": "object",
        "required": ["name", "inputs", "expected"],
        "additionalProperties": False,
        "properties": properties,
    }


def schema() -> dict[str, object]:
    """The schema as a JSON-ready dict (kinds and fields in sorted order, so the text is stable)."""
    rules: list[object] = []
    for version in VERSIONS:
        kinds = sorted(name for name, spec in REGISTRY.items() if spec.since_version <= version)
        rules.append(
            {
                "if": {"properties": {"version": {"const": version}}},
                "then": {
                    "properties": {
                        "kind": {"enum": kinds},
                        "cases": {"items": {"$ref": f"#/$defs/case_v{version}"}},
                    }
                },
            }
        )
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        rules.append(
            {
                "if": {"properties": {"kind": {"const": name}}},
                "then": {
                    "properties": {
                        "cases": {
                            "items": {
                                "properties": {
                                    "inputs": {"propertyNames": {"enum": sorted(spec.inputs)}},
                                    "expected": {"propertyNames": {"enum": sorted(spec.outputs)}},
                                }
                            }
                        }
                    }
                },
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "e2e-relay test-vector file",
        "description": (
            "A file of known-answer vectors for the e2e-relay protocol core; docs/vectors.md "
            "describes every kind and field."
        ),
        "type": "object",
        "required": ["format", "version", "kind", "provenance", "cases"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": FORMAT},
            "version": {"enum": list(VERSIONS)},
            "kind": {"enum": sorted(REGISTRY)},
            "provenance": _NON_BLANK,
            "cases": {"type": "array", "minItems": 1},
        },
        "allOf": rules,
        "$defs": {f"case_v{version}": _case(version) for version in VERSIONS},
    }
