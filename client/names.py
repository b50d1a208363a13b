"""What an account name, a device id and a relay URL must be, checked before anything is created.

What this module owns
---------------------
:func:`check_account_name`, :func:`check_device_id` and :func:`check_relay_url`.  The relay refuses
names outside its rules (docs/relay-protocol.md, ``bad_request``), but only once a connection is
open, and by then a client that trusted the name has made a state file for it, perhaps at a path
built from it (``../../x y.sqlite3``).  The client therefore applies the relay's rules itself, first:
a name that passes can never leave a directory or hide a character, and a refused one changes
nothing.

Invariants
----------
* The name rule is the relay's, character for character: 1 to 64 characters of ``a-z 0-9 . _ @ +
  -``, starting with a letter or a digit (so never ``.`` or ``..``, never a slash, a space, a
  control character, or a second spelling of a name that differs by case alone).
  ``tests/client/test_names.py`` holds the two rules to each other.
* A relay URL passes only with the scheme ``ws`` or ``wss``, a host, a port in range if one is
  given, and no user name, password, query or fragment.
* Each check returns its argument unchanged or raises a subclass of
  :class:`client.errors.InvalidInputError`; the message shows the refused value inert.

What it does not know
---------------------
Whether the name is free on the relay (only the relay can say, at registration) or whether the
relay is reachable.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from client.errors import InvalidInputError, InvalidNameError, InvalidRelayURLError
from client.inert import inert

__all__ = ["MAX_DEVICE_ID", "check_account_name", "check_device_id", "check_relay_url"]

_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
"""The relay's account name rule (``server.protocol.account_name``)."""

MAX_DEVICE_ID = 2**31 - 1
"""The largest device id the relay accepts."""


def check_account_name(name: str) -> str:
    """``name`` if the relay accepts it as an account name; :class:`InvalidNameError` otherwise."""
    if not isinstance(name, str) or _ACCOUNT.fullmatch(name) is None:
        shown = inert(name) if isinstance(name, str) else type(name).__name__
        hint = ""
        if isinstance(name, str) and _ACCOUNT.fullmatch(name.lower()) is not None:
            hint = f" (account names are lowercase: {name.lower()!r})"
        raise InvalidNameError(
            f"{shown!r} is not an account name: use 1 to 64 lowercase letters, digits and . _ @ + -, "
            f"starting with a letter or a digit{hint}"
        )
    return name


def check_device_id(device_id: int) -> int:
    """``device_id`` if it is in the relay's range 1..2^31-1."""
    if isinstance(device_id, bool) or not isinstance(device_id, int) or not 1 <= device_id <= MAX_DEVICE_ID:
        raise InvalidInputError(f"a device id is a whole number from 1 to {MAX_DEVICE_ID}")
    return device_id


def check_relay_url(url: str) -> str:
    """``url`` if it names a relay (``ws://`` or ``wss://``); :class:`InvalidRelayURLError` otherwise."""
    problem = _url_problem(url)
    if problem is not None:
        shown = inert(url) if isinstance(url, str) else type(url).__name__
        raise InvalidRelayURLError(f"{shown!r} is not a relay URL: {problem} (e.g. ws://127.0.0.1:8765)")
    return url


def _url_problem(url: str) -> str | None:
    if not isinstance(url, str):
        return "not a string"
    if not url.isascii() or not url.isprintable() or " " in url:
        return "it holds spaces, control characters or characters outside ASCII"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return str(error)
    if parts.scheme not in ("ws", "wss"):
        return "the scheme must be ws or wss"
    if not parts.hostname:
        return "it names no host"
    if parts.username is not None or parts.password is not None:
        return "it carries a user name or password"
    if parts.query or parts.fragment:
        return "it has a query or a fragment"
    if port == 0:
        return "port 0 is not a port to dial"
    return None
