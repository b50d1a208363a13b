"""The public API of ``e2e`` is exactly what docs/api.md says, module by module."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _documented() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in API_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `([\w.]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
            continue
        item = re.match(r"- `(\w+)`", line)
        if item and current is not None:
            current.append(item.group(1))
    return sections


DOCUMENTED = _documented()


def test_the_page_documents_the_core_modules() -> None:
    assert {"e2e", "e2e.keys", "e2e.x3dh", "e2e.pqxdh", "e2e.session", "e2e.errors"} <= set(DOCUMENTED)


@pytest.mark.parametrize("module_name", sorted(DOCUMENTED))
def test_all_matches_the_documentation(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert list(module.__all__) == DOCUMENTED[module_name]
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is exported but missing"
