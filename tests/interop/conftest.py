"""Fixtures for the interop tests: a running libsignal Node peer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .node_peer import NodePeer


@pytest.fixture
def libsignal() -> Iterator[NodePeer]:
    """A fresh libsignal (Node) peer process, stopped after the test."""
    with NodePeer() as peer:
        yield peer
