"""e2e-chat's business desk: verified names, quick replies picked by number, and blocked accounts.

What this module owns
---------------------
:class:`BusinessDesk`, which the chat application asks about every incoming message before it
prints it:

* **verified names**: with ``--directory-key`` configured, the desk looks up the certificate of
  every account that writes (:func:`client.business.check_business_name`: the relay serves it,
  the desk verifies it against the directory key, the identity key of our session with the
  account, and the clock).  A verified account's messages are shown as ``NAME ✓ "Display
  Name"``; an account whose certificate fails gets one warning line saying so and is shown by
  its account name alone, never by the name it claims.  Accounts without a certificate are
  ordinary contacts and get no mark.
* **quick replies**: an offer is shown as its prompt and numbered options; typing the bare
  number (or ``/pick N``) sends the structured reply.  The last offer of each contact is the one
  a number answers.
* **blocking**: ``/block NAME`` hides everything NAME sends from then on and refuses to send to
  it; the list is kept in a versioned JSON file beside the state file
  (``{"format": "e2e-chat-blocked", "version": 1, "accounts": [...]}``).  Blocking is local: the
  relay still delivers NAME's messages (the client decrypts and acknowledges them, so they do not
  pile up) and NAME is not told.

Everything a business sends (its text, the prompt and labels of its offers, the display name in
its certificate) is shown through :func:`client.inert.inert`, which replaces control and invisible
characters with visible escapes; labels and names passed the stricter display-text rule already.

What it does not know
---------------------
The terminal (output goes through ``write``) and the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from client import envelope
from client.business import NameStatus, UnverifiedName, VerifiedName, check_business_name, send_choice
from client.client import Client
from client.events import Message
from client.inert import inert
from client.structured import (
    QuickReplies,
    StructuredMessageError,
    decode_offer,
    decode_reply,
    offer_fallback,
)
from e2e.keys import PublicKey

__all__ = ["BLOCKED_FORMAT", "BusinessDesk", "history_text"]

BLOCKED_FORMAT = "e2e-chat-blocked"
_BLOCKED_VERSION = 1
_LOOKUP_AGAIN_AFTER = 600.0
"""Seconds after which a contact's certificate is looked up again (it may have expired)."""


def _inert(text: str) -> str:
    """``text`` from the network made safe to print, line by line (:func:`client.inert.inert`)."""
    return "\n".join(inert(line) for line in text.split("\n"))


def history_text(body: bytes) -> str | None:
    """A stored quick-reply offer or reply as the history shows it; None for any other body."""
    try:
        return _inert(offer_fallback(decode_offer(body)))
    except StructuredMessageError:
        pass
    try:
        return f"(picked option {decode_reply(body).number})"
    except StructuredMessageError:
        return None


class BusinessDesk:
    """What the chat knows of businesses for one user."""

    def __init__(
        self,
        client: Client,
        directory_key: PublicKey | None,
        blocked_path: Path | None,
        write: Callable[[str], None],
    ) -> None:
        self.client = client
        self.directory_key = directory_key
        self.blocked_path = blocked_path
        self.write = write
        self.names: dict[str, NameStatus] = {}
        self._looked_up: dict[str, float] = {}
        self.offers: dict[str, QuickReplies] = {}
        self.blocked: set[str] = self._load_blocked()
        self._tasks: set[asyncio.Task[NameStatus]] = set()

    # -- blocking ------------------------------------------------------------------------------

    def _load_blocked(self) -> set[str]:
        if self.blocked_path is None:
            return set()
        try:
            document = json.loads(self.blocked_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError):
            self.write(f"!! {self.blocked_path} is unreadable; no account is blocked")
            return set()
        if (
            not isinstance(document, dict)
            or document.get("format") != BLOCKED_FORMAT
            or document.get("version") != _BLOCKED_VERSION
            or not isinstance(document.get("accounts"), list)
        ):
            self.write(f"!! {self.blocked_path} is not a version-1 block list; no account is blocked")
            return set()
        return {name for name in document["accounts"] if isinstance(name, str)}

    def _save_blocked(self) -> None:
        if self.blocked_path is None:
            return
        document = {"format": BLOCKED_FORMAT, "version": _BLOCKED_VERSION, "accounts": sorted(self.blocked)}
        temporary = self.blocked_path.with_name(self.blocked_path.name + ".tmp")
        temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
        os.replace(temporary, self.blocked_path)

    def block(self, name: str) -> None:
        self.blocked.add(name)
        self.offers.pop(name, None)
        self._save_blocked()

    def unblock(self, name: str) -> bool:
        if name not in self.blocked:
            return False
        self.blocked.discard(name)
        self._save_blocked()
        return True

    # -- names ---------------------------------------------------------------------------------

    def label(self, name: str) -> str:
        """How ``name`` is shown: with its verified display name, or by the account name alone."""
        status = self.names.get(name)
        if isinstance(status, VerifiedName):
            return f'{_inert(name)} ✓ "{_inert(status.display_name)}"'
        return _inert(name)

    def is_business(self, name: str) -> bool:
        return isinstance(self.names.get(name), VerifiedName) or name in self.offers

    def look_up_soon(self, name: str) -> None:
        """Look ``name``'s certificate up in the background, unless it was looked up recently."""
        if self.directory_key is None:
            return
        last = self._looked_up.get(name)
        if last is not None and time.monotonic() - last < _LOOKUP_AGAIN_AFTER:
            return
        self._looked_up[name] = time.monotonic()
        task = asyncio.create_task(self.look_up(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def prepare(self, name: str) -> None:
        """Check ``name``'s certificate now (at most a few seconds) if it was never checked."""
        if self.directory_key is None or name in self._looked_up or name in self.blocked:
            return
        self._looked_up[name] = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.look_up(name), 5)

    async def look_up(self, name: str, *, tell: bool = False) -> NameStatus:
        """Verify ``name``'s certificate now; say so when the answer changed (or when ``tell``)."""
        try:
            status = await check_business_name(self.client, name, self.directory_key)
        except Exception as error:
            status = UnverifiedName(name, f"lookup failed ({type(error).__name__})")
        before = self.names.get(name)
        self.names[name] = status
        if isinstance(status, VerifiedName):
            if tell or before != status:
                self.write(f"  ✓ {self.label(name)} is a verified business (certified by the directory key)")
        elif tell or (status.reason.startswith("certificate refused") and before != status):
            self.write(
                f"!! {_inert(name)} has no verified business name: {_inert(status.reason)}; "
                "any name it gives itself is unproven"
            )
        return status

    # -- messages ------------------------------------------------------------------------------

    def handles(self, message: Message, clock: Callable[[int], str]) -> bool:
        """Show ``message`` if it is the desk's to show (blocked, structured, from a business)."""
        sender = message.sender
        if sender in self.blocked:
            return True
        self.look_up_soon(sender)
        when = clock(message.timestamp)
        if message.content_type == envelope.CONTENT_QUICK_REPLIES:
            try:
                offer = decode_offer(message.body)
            except StructuredMessageError as error:
                self.write(f"!! {_inert(sender)} sent quick replies that were refused: {_inert(str(error))}")
                return True
            self.offers[sender] = offer
            prompt = _inert(offer.prompt) if offer.prompt else "(choose one)"
            self.write(f"[{when}] {self.label(sender)}: {prompt}")
            for number, option in enumerate(offer.options, 1):
                self.write(f"      {number}. {_inert(option.label)}")
            self.write(f"      (answer with the number, 1 to {len(offer.options)}, or /pick N)")
            return True
        if message.content_type == envelope.CONTENT_QUICK_REPLY:
            self.write(f"[{when}] {_inert(sender)} sent a quick reply (only businesses read those)")
            return True
        if self.is_business(sender) and not message.is_attachment:
            self.write(f"[{when}] {self.label(sender)}: {_inert(message.text)}")
            return True
        return False

    def choice(self, peer: str, text: str) -> int | None:
        """The option number ``text`` picks in ``peer``'s last offer, or None if it is plain text."""
        offer = self.offers.get(peer)
        stripped = text.strip()
        if offer is None or not stripped.isascii() or not stripped.isdigit():
            return None
        number = int(stripped)
        return number if 1 <= number <= len(offer.options) else None

    async def pick(self, peer: str, number: int) -> str:
        """Send the reply picking option ``number`` of ``peer``'s last offer; returns its label."""
        offer = self.offers.get(peer)
        if offer is None:
            raise StructuredMessageError(f"{peer} has offered no quick replies")
        await send_choice(self.client, peer, offer, number)
        return offer.options[number - 1].label

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
