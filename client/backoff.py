"""Reconnection delays: capped exponential backoff with full jitter.

What this module owns
---------------------
:class:`Backoff`, which answers "how long to wait before the next connection attempt".  After the
``n``-th consecutive failure (counting from 0) the delay is drawn uniformly from
``[0, min(cap, base · 2**n)]`` ("full jitter"), so that many clients cut off by one relay restart do
not all come back in the same instant.  A successful connection resets the count.

What it does not know
---------------------
Time and randomness: the caller injects ``random`` (a function returning a float in ``[0, 1)``) and
does the sleeping, so tests check the delays exactly without waiting for them.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Capped, jittered exponential delays (seconds)."""

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 30.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = random
        self.failures = 0

    def ceiling(self) -> float:
        """The largest delay the next call to :meth:`next_delay` may return."""
        # Bound the exponent so that a long outage cannot overflow the float.
        return min(self.cap, self.base * float(2 ** min(self.failures, 64)))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._random() * self.ceiling()
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures (after a connection succeeded)."""
        self.failures = 0
