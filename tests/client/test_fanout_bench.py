"""The bounded version of ``make bench-devices``: the benchmark runs end to end on two rows.

No figure is checked (speed is measured by the benchmark, never asserted in tests); the run must
complete and print every row, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fanout_benchmark_runs_on_two_rows() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/fanout_bench.py", "--devices", "1,2", "--messages", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "2"]
    assert [row[3] for row in rows] == ["1", "2"]
