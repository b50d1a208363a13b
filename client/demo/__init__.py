"""The demo program: ``make demo``, ``e2e-demo`` or ``python -m client.demo``.

:mod:`.script` holds the conversation, :mod:`.layout` the Alice | relay | Bob columns,
:mod:`.relay` the relay process and the read-only view of its database, :mod:`.network` the
reordering that makes messages arrive out of order for real.
"""

from __future__ import annotations

from client.demo.script import main

__all__ = ["main"]
