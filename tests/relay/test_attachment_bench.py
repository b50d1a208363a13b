"""The bounded version of ``make bench-attachments``: the benchmark runs end to end on small files.

No figure is checked (speed is measured by the benchmark, never asserted in tests); the run must
complete and print every row, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_attachment_benchmark_runs_on_small_files() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/attachment_bench.py", "--sizes", "64K,300K"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split()[2:4] for line in result.stdout.splitlines() if "KiB" in line]
    assert len(rows) == 10
    assert "blob service peak RSS" in result.stdout
