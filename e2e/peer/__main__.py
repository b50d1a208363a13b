"""``python -m e2e.peer``: the JSON-lines peer on standard input and output.

Reads one request per line from standard input and writes one reply per line to standard output,
flushed at once (see :mod:`e2e.peer` for the requests and ``docs/interop.md`` for a walk-through).
It stops at the end of input or after a ``shutdown`` request, exiting 0.  A line longer than
:data:`~e2e.peer.MAX_LINE` bytes is read to its end, discarded, and answered with a
``PeerRequestError``, so one bad line never desynchronises the exchange.

``--seed HEX`` draws every random byte from :class:`~e2e.vectors.SeededRng` (reproducible runs,
for tests only: the keys are then predictable); without it the operating system's generator is
used.  Nothing is written to disk.

This is tooling beside the core, like ``python -m e2e.vectors``: the one place of the peer that
touches files, the clock and the operating system's randomness.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import BinaryIO, TextIO

from e2e.keys import Rng
from e2e.peer import MAX_LINE, Peer, PeerRequestError, error_reply
from e2e.vectors import SeededRng


def _implementation() -> str:
    try:
        return f"e2e-relay {metadata.version('e2e-relay')}"
    except metadata.PackageNotFoundError:
        return "e2e-relay (not installed)"


def serve(peer: Peer, requests: BinaryIO, replies: TextIO) -> None:
    """Answer every line of ``requests`` on ``replies`` until end of input or ``shutdown``."""
    while not peer.closed:
        line = requests.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            # Too long: skip the rest of the line, and answer for it once.
            while line and not line.endswith(b"\n"):
                line = requests.readline(MAX_LINE)
            reply = error_reply(None, PeerRequestError(f"a request line is at most {MAX_LINE} bytes"))
        else:
            stripped = line.strip()
            if not stripped:
                continue
            reply = peer.handle_line(stripped)
        replies.write(reply + "\n")
        replies.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", metavar="HEX", help="draw all randomness from SeededRng(HEX) (tests only)")
    arguments = parser.parse_args(argv)
    rng: Rng = os.urandom
    if arguments.seed is not None:
        try:
            rng = SeededRng(bytes.fromhex(arguments.seed))
        except ValueError:
            parser.error("--seed takes hexadecimal")
    peer = Peer(rng, lambda: time.time_ns() // 1_000_000, _implementation())
    serve(peer, sys.stdin.buffer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
