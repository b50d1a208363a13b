"""Fixtures shared by the program tests.  Each module that uses ``chats`` defines its own ``relay``
fixture (a relay process with the options that module needs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.demo.relay import RelayProcess

from .helpers import Chats, processes_mentioning


@pytest.fixture
def chats(tmp_path: Path, relay: RelayProcess) -> Iterator[Chats]:
    started = Chats(tmp_path, relay)
    try:
        yield started
    finally:
        started.close()
        relay.stop()
        assert processes_mentioning(str(tmp_path)) == []
