"""``python -m server``: the same as the ``e2e-relay`` command."""

from server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
