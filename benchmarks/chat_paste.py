"""What one pasted line costs e2e-chat: wall time and peak memory, in a real pseudo-terminal.

A relay process on loopback, ``e2e-chat`` in a pty (pexpect), and a paste of ``--chars`` characters
written as a terminal without bracketed paste mode delivers it: one key press per character, as
fast as the program reads.  Then Enter.  Reported: seconds until the program has taken the whole
paste (it stops reading, or says it dropped the rest), seconds until it has answered Enter, and
the chat process's peak resident memory (``VmHWM``).

    .venv/bin/python benchmarks/chat_paste.py --chars 120000
    .venv/bin/python benchmarks/chat_paste.py --chars 20000 --source /path/to/an/older/checkout

``--source`` runs the ``client`` package of another checkout (an older version, to compare).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import sys
import tempfile
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.demo.relay import RelayProcess  # noqa: E402


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chars", type=int, default=120_000)
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose client runs")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        relay = RelayProcess(Path(directory))
        url = relay.start()
        env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", PYTHONPATH=str(args.source))
        env["XDG_DATA_HOME"] = directory
        child = pexpect.spawn(
            sys.executable,
            ["-m", "client.chat", "paster", "--relay", url, "--to", "nobody"],
            env=env,
            cwd=directory,
            encoding="utf-8",
            dimensions=(40, 120),
        )
        try:
            child.expect("connected to the relay", timeout=30)
            data = ("y" * args.chars).encode()
            started = time.monotonic()
            deadline = started + args.timeout
            output = 0
            while data and time.monotonic() < deadline:
                _, writable, _ = select.select([], [child.child_fd], [], 0.05)
                if writable:
                    data = data[os.write(child.child_fd, data[:4096]) :]
                try:
                    while True:
                        output += len(child.read_nonblocking(1 << 20, timeout=0))
                except (pexpect.TIMEOUT, pexpect.EOF):
                    pass
            pasted = time.monotonic() - started
            child.send("\r")
            # Whatever the client answers: refused, queued, or the relay's refusal.
            answer = re.compile(r"not sent|queued|NOT delivered|no account")
            child.expect(answer, timeout=max(deadline - time.monotonic(), 1))
            answered = time.monotonic() - started
            peak = _peak_kib(child.pid)
            print(
                f"chars={args.chars} paste_taken_s={pasted:.2f} enter_answered_s={answered:.2f} "
                f"peak_rss_mib={peak / 1024:.0f} output_bytes={output}"
            )
        finally:
            child.terminate(force=True)
            relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
