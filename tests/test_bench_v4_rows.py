"""The benchmark's v4 rows run on a tiny scale (``make bench`` is not part of ``make test``).

This project's peer sets up version-4 sessions (Signal's PQXDH with Kyber1024, then SPQR), runs
the v4 burst and ping-pong, and measures the bytes SPQR adds; the percentages against v3 are
computed only from figures measured in the same run.  Nothing here is timed against a threshold.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from core_bench import measure, with_shares
from core_peers import PLAINTEXT_64, Ours


def test_v4_rows_run_and_spqr_adds_bytes() -> None:
    peer = Ours()
    peer.v4_setups(1)
    peer.start_v4()
    peer.burst_v4(3, PLAINTEXT_64)
    peer.ping_pong_v4(5, PLAINTEXT_64)
    assert measure(lambda n: peer.ping_pong_v4(n, PLAINTEXT_64), 0.002, 1) > 0
    # Field 5 with a 32-byte chunk is 37 bytes plus its tag and length; some messages carry none.
    added = peer.spqr_bytes(200)
    assert 6 <= added <= 42


def test_shares_only_from_pairs_measured() -> None:
    shares = with_shares(
        {"burst_64": 100.0, "burst_64_v4": 40.0, "ping_pong_64": 50.0, "ping_pong_64_v4": "n/a (x)"}
    )
    assert shares["v4_burst_share"] == 40.0
    assert "v4_ping_pong_share" not in shares
