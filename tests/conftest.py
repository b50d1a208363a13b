"""Shared fixtures: deterministic randomness for known-answer tests."""

from __future__ import annotations

import pytest

from e2e.vectors import SeededRng


class DeterministicRng(SeededRng):
    """A reproducible byte source (SHA-256 in counter mode, as the vector files define it)."""

    def __init__(self, seed: bytes = b"e2e-tests") -> None:
        super().__init__(seed)


@pytest.fixture
def rng() -> DeterministicRng:
    return DeterministicRng()
