"""Shared fixtures: deterministic randomness for known-answer tests."""

from __future__ import annotations

import hashlib

import pytest


class DeterministicRng:
    """A reproducible byte source (SHA-256 in counter mode) for tests that pin randomness."""

    def __init__(self, seed: bytes = b"e2e-tests") -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:n]


@pytest.fixture
def rng() -> DeterministicRng:
    return DeterministicRng()
