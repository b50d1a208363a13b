"""``python -m client.chat``: run the terminal chat client."""

from __future__ import annotations

import sys

from client.chat import main

sys.exit(main())
