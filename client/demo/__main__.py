"""``python -m client.demo``: run the demo."""

from __future__ import annotations

import sys

from client.demo.script import main

sys.exit(main())
