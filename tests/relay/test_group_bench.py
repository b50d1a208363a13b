"""The bounded version of ``make bench-groups``: the benchmark runs end to end on a small group.

No figure is checked (speed is measured by the benchmark, never asserted in tests); the run must
complete and print both rows, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_group_benchmark_runs_on_a_small_group() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/group_fanout.py", "--members", "5", "--messages", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line.split() for line in result.stdout.splitlines() if line.startswith(("group_send", "pairwise"))
    ]
    assert [row[0] for row in rows] == ["group_send", "pairwise"]
    assert "1 sender, 5 members, 5 messages" in result.stdout
