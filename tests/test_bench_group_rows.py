"""The benchmark's group rows run, for each peer that fills them, on a tiny scale.

``make bench`` is not part of ``make test``; this bounded run keeps its group code from rotting: every
peer builds a group whose members decrypt a first message, sends a few group messages (also with the
record stored and reloaded), and where it has sessions, fans a few messages out pairwise.  Nothing is
timed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from core_bench import measure
from core_peers import PLAINTEXT_64, Axolotl, Libsignal, Ours, Peer, SyncPeer


@pytest.mark.parametrize("peer_class", [Ours, Axolotl, Libsignal], ids=lambda peer: peer.name)
def test_group_rows_run(peer_class: type[Peer]) -> None:
    peer = peer_class()
    try:
        peer.start_group(3)
        peer.group_send(5, PLAINTEXT_64)
        peer.group_send_stored(3, PLAINTEXT_64)
        assert measure(lambda n: peer.group_send(n, PLAINTEXT_64), 0.002, 1, clock=peer.cpu_clock) > 0
        if isinstance(peer, SyncPeer):
            peer.start_fanout(3)
            peer.fanout(2, PLAINTEXT_64)
        else:
            with pytest.raises(NotImplementedError):
                peer.start_fanout(3)
    finally:
        if isinstance(peer, Libsignal):
            peer.close()
