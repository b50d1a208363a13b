"""Client fan-out: every message to every device of the recipient and to our own other devices.

Theory
------
An account is a primary and its linked companions, each with its own identity key, listed in a
**signed device list** that the primary signs (``e2e.devices``).  :class:`FanOut` (a mixin of
:class:`client.client.Client`) keeps, per account, the newest list it verified:

* :meth:`FanOut.refresh_devices` fetches a list from the relay and verifies it against the account's
  primary identity key: the key of the contact row, the one the safety number covers (trust on first
  use makes the list's own primary the contact's key when the account is new to us).  A list older
  than one seen, a withheld list, or another list under a version seen is refused
  (:class:`~e2e.devices.DeviceListRollbackError`).  A list signed by *another* primary key is held
  like an identity change: the new key waits for ``Client.accept_identity`` and
  :class:`~client.errors.IdentityChanged` is raised.  Verified companion keys go to the protocol
  store (``SqliteProtocolStore.device_keys``), so a session with a companion is trusted with exactly
  its listed key and a device missing from the list is not trusted at all.
* :meth:`FanOut.send_all` encrypts one message to each device of the recipient's list over its own
  pairwise session, and a *transcript* (``envelope.CONTENT_TRANSCRIPT``: the contact's name and the
  message) to each of our own other devices, so every device shows the whole conversation.  A bundle
  whose identity key is not the listed one (a relay swapping keys) is refused before anything is
  committed (:class:`DeviceKeyMismatchError`).  Every copy is encrypted and put in the outbox **in
  one transaction**, each under its own client message id ``<message id>.<n>``: after a crash the
  outbox holds exactly the copies the relay has not acknowledged, and the relay's deduplication by
  client id makes a resend of an acknowledged one a no-op, so each device receives it once.
  :meth:`FanOut.delivery` reads which copies are still waiting.

Safety numbers stay per account (the primary's key); linking or unlinking a companion changes none.

What this module does not know
------------------------------
The relay's wire format (:mod:`client.transport`, :mod:`client.devices`), SQL (:mod:`client.store`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import envelope
from client.devices import (
    DeviceListBook,
    fetch_device_list,
    link_device,
    register_companion,
    unlink_device,
    wait_for_link,
)
from client.errors import ClientError, MessageTooLargeError
from e2e.address import ProtocolAddress
from e2e.devices import (
    PRIMARY_DEVICE_ID,
    DeviceList,
    DeviceListError,
    SignedDeviceList,
    verify_device_list,
)
from e2e.errors import DecodeError, InvalidSignatureError, UntrustedIdentityError
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.linking import LinkOffer

if TYPE_CHECKING:
    from client.client import Client

__all__ = [
    "DeviceKeyMismatchError",
    "Delivery",
    "FanOut",
    "encode_transcript",
    "decode_transcript",
    "link_companion",
]

_MAX_NAME = 255

logger = logging.getLogger("client")


class DeviceKeyMismatchError(ClientError):
    """A bundle for a listed device whose identity key is not the one its signed list names."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one fanned-out message stands: the devices the relay has acknowledged and those waiting."""

    message_id: str
    pending: tuple[tuple[str, int], ...]


def encode_transcript(peer: str, content_type: int, body: bytes) -> bytes:
    """The body of a transcript: a fallback text (``envelope.with_fallback``: content types from 4
    on open with one, for clients that do not know the type), then
    ``u8 len(peer) ‖ peer (UTF-8) ‖ content type (1) ‖ body``."""
    raw = peer.encode("utf-8")
    if not 0 < len(raw) <= _MAX_NAME:
        raise ValueError("a contact name is 1 to 255 bytes of UTF-8")
    payload = bytes((len(raw),)) + raw + bytes((content_type,)) + body
    return envelope.with_fallback(f"(a message you sent to {peer} from another of your devices)", payload)


def decode_transcript(data: bytes) -> tuple[str, int, bytes]:
    """Parse a transcript body; :class:`DecodeError` if malformed."""
    _, data = envelope.split_fallback(data)
    if len(data) < 3 or not 0 < data[0] <= len(data) - 2:
        raise DecodeError("a transcript is malformed")
    end = 1 + data[0]
    try:
        peer = data[1:end].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("a transcript names a contact that is not UTF-8") from None
    content_type = data[end]
    if content_type not in (envelope.CONTENT_TEXT, envelope.CONTENT_ATTACHMENT):
        raise DecodeError("a transcript carries a text or an attachment pointer, nothing else")
    return peer, content_type, data[end + 1 :]


class FanOut:
    """Linked-device behaviour of :class:`client.client.Client` (see the module docstring)."""

    def _init_devices(self: Client) -> None:
        """Load the lists verified earlier (called once by ``Client.__init__``)."""
        self._device_book = DeviceListBook()
        for _account, signed in self._store.device_lists():
            device_list = DeviceList.decode(SignedDeviceList.decode(signed).list_bytes)
            self._device_book.remember(device_list)
            self._adopt_list(device_list)

    def _adopt_list(self: Client, device_list: DeviceList) -> None:
        keys = self._protocol.device_keys
        for address in [a for a in keys if a[0] == device_list.account]:
            del keys[address]
        own = device_list.account == self.name
        for entry in device_list.devices:
            # Our own primary is trusted through our list; a contact's primary through the contact row.
            if entry.device_id != PRIMARY_DEVICE_ID or (own and self.device_id != PRIMARY_DEVICE_ID):
                keys[(device_list.account, entry.device_id)] = entry.identity_key.serialize()
        self._protocol.listed_accounts.add(device_list.account)

    def _primary_key(self: Client, name: str) -> PublicKey | None:
        if name == self.name:
            if self.device_id == PRIMARY_DEVICE_ID:
                return self.identity_key
            seen = self._device_book.seen(name)
            return None if seen is None else seen.primary_identity_key
        contact = self._store.contact(name)
        return None if contact is None else PublicKey.deserialize(contact.identity_key)

    def known_devices(self: Client, name: str) -> tuple[int, ...]:
        """The device ids of ``name`` as last verified (just the primary when no list was seen)."""
        seen = self._device_book.seen(name)
        return (PRIMARY_DEVICE_ID,) if seen is None else seen.device_ids

    async def refresh_devices(self: Client, name: str) -> DeviceList | None:
        """Fetch and verify ``name``'s device list (module docstring); returns the list now held.

        None means the account has published no list and is new to us: its primary alone, whose
        key the first session's bundle will introduce (trust on first use).
        """
        connection = await self._connection()
        signed = await fetch_device_list(connection, name)
        primary = self._primary_key(name)
        if primary is None:
            if signed is None:
                return None
            # First contact with the account: trust on first use, the list's own primary.
            primary = DeviceList.decode(signed.list_bytes).primary_identity_key
        try:
            checked = self._device_book.check(name, primary, signed)
        except InvalidSignatureError:
            self._hold_new_primary(name, signed)
            raise
        if signed is not None:
            with self._store.transaction():
                if self._store.contact(name) is None and name != self.name:
                    self._store.add_contact(name, primary.serialize(), self._now_ms())
                self._store.put_device_list(name, checked.version, signed.encode())
            self._adopt_list(checked)
        return checked

    def _hold_new_primary(self: Client, name: str, signed: SignedDeviceList | None) -> None:
        """A list signed by a key other than the trusted primary: held like an identity change."""
        if signed is None or name == self.name:
            return
        with contextlib.suppress(DecodeError, DeviceListError, InvalidSignatureError):
            claimed = DeviceList.decode(signed.list_bytes).primary_identity_key
            verify_device_list(signed, claimed, name)
            contact = self._store.contact(name)
            if contact is not None and contact.identity_key != claimed.serialize():
                self._store.record_changed_identity(name, claimed.serialize())
                raise self._identity_changed(
                    name, PRIMARY_DEVICE_ID, contact.identity_key, claimed.serialize()
                )

    async def send_all(
        self: Client, name: str, body: bytes | str, *, content_type: int = envelope.CONTENT_TEXT
    ) -> str:
        """Send ``body`` to every device of ``name`` and a transcript to our own other devices.

        Returns the message id.  When it returns, every copy is in the outbox (one transaction) and
        each will reach its device exactly once.  Raises :class:`~client.errors.IdentityChanged`,
        :class:`DeviceKeyMismatchError`, the core's device-list errors or the relay's; nothing is
        committed then.
        """
        body = self._checked_body(body)
        self._check_running()
        targets: list[tuple[str, int, PublicKey | None]] = []
        if name != self.name:
            theirs = await self._devices_for_send(name)
            if theirs is None:
                targets.append((name, PRIMARY_DEVICE_ID, None))
            else:
                targets += [(name, e.device_id, e.identity_key) for e in theirs.devices]
        own = await self._own_devices()
        targets += [(self.name, d, k) for d, k in own if d != self.device_id]
        transcript_body = encode_transcript(name, content_type, body)
        if any(t[0] == self.name for t in targets) and len(transcript_body) > self.max_message_bytes:
            # The copy for our own devices carries the contact's name too.
            raise MessageTooLargeError(len(transcript_body), self.max_message_bytes)
        locks = [self._lock((n, d)) for n, d, _ in sorted(targets, key=lambda t: (t[0], t[1]))]
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            for target, device_id, _ in targets:
                if target != self.name:
                    self._check_identity_unchanged(target, device_id)
            ciphers = {(n, d): self._cipher(ProtocolAddress(n, d)) for n, d, _ in targets}
            bundles: dict[tuple[str, int], Any] = {}
            for target, device_id, listed in targets:
                if ciphers[(target, device_id)].has_session():
                    continue
                bundle = await self._fetch_bundle(target, device_id)
                if listed is not None and bundle.identity_key != listed:
                    raise DeviceKeyMismatchError(
                        f"the relay served {target}/{device_id} with a key that its signed device "
                        "list does not name"
                    )
                bundles[(target, device_id)] = bundle
            for target, device_id, _ in targets:
                if target != self.name:
                    self._check_identity_unchanged(target, device_id)
            message_id = self._rng(envelope.MESSAGE_ID_LENGTH)
            timestamp = self._now_ms()
            to_peer = envelope.encode(envelope.Envelope(message_id, timestamp, body, content_type))
            transcript = envelope.encode(
                envelope.Envelope(
                    message_id,
                    timestamp,
                    transcript_body,
                    envelope.CONTENT_TRANSCRIPT,
                )
            )
            mid = message_id.hex()
            try:
                with self._store.transaction():
                    for index, (target, device_id, _) in enumerate(targets):
                        cipher = ciphers[(target, device_id)]
                        bundle = bundles.get((target, device_id))
                        if bundle is not None:
                            self._start_session(ProtocolAddress(target, device_id), cipher, bundle)
                        plaintext = transcript if target == self.name else to_peer
                        ciphertext = cipher.encrypt(plaintext, self._rng, trace=self._trace)
                        self._store.add_outbox(
                            target,
                            device_id,
                            f"{mid}.{index}",
                            int(ciphertext.type),
                            ciphertext.body,
                            timestamp,
                        )
                    self._store.add_message("out", name, PRIMARY_DEVICE_ID, mid, timestamp, body)
            except UntrustedIdentityError as error:
                self._protocol.forget()
                address = error.address
                if (
                    address is not None
                    and address.device_id == PRIMARY_DEVICE_ID
                    and address.name != self.name
                ):
                    raise self._untrusted(address.name, address.device_id, error) from error
                raise
            except BaseException:
                self._protocol.forget()
                raise
        if self._hooks.after_send_commit is not None:
            self._hooks.after_send_commit(mid)
        self._outbox_empty.clear()
        self._outbox_changed.set()
        return mid

    async def _devices_for_send(self: Client, name: str) -> DeviceList | None:
        """Online: the list fetched and verified now.  Offline: the newest one verified before, so
        that a message is encrypted and queued while the relay is away (sent when it is back)."""
        if self._connected is None:
            return self._device_book.seen(name)
        return await self.refresh_devices(name)

    async def _own_devices(self: Client) -> list[tuple[int, PublicKey | None]]:
        checked = await self._devices_for_send(self.name)
        if checked is None:
            return [(self.device_id, self.identity_key)]
        if self.device_id not in checked.device_ids:
            raise DeviceListError("this device is not on its own account's device list")
        return [(e.device_id, e.identity_key) for e in checked.devices]

    def _forget_devices(self: Client, name: str) -> None:
        """Drop ``name``'s list (its primary key changed: lists under the new key start afresh)."""
        self._device_book.forget(name)
        self._store.remove_device_list(name)
        for address in [a for a in self._protocol.device_keys if a[0] == name]:
            del self._protocol.device_keys[address]
        self._protocol.listed_accounts.discard(name)

    async def link(self: Client, code: str) -> int:
        """On the primary: link the companion showing ``code``; returns the device id it gets."""
        if self.device_id != PRIMARY_DEVICE_ID:
            raise DeviceListError("only the primary device links companions")
        offer = LinkOffer.from_code(code)
        connection = await self._connection()
        device_id, _ = await link_device(
            connection, self._identity_key, offer, rng=self._rng, now=self._clock
        )
        await self.refresh_devices(self.name)
        return device_id

    async def unlink(self: Client, device_id: int) -> None:
        """On the primary: remove a companion; the relay logs it out and deletes its queue."""
        if self.device_id != PRIMARY_DEVICE_ID:
            raise DeviceListError("only the primary device unlinks companions")
        connection = await self._connection()
        await unlink_device(connection, self._identity_key, device_id, rng=self._rng, now=self._clock)
        await self.refresh_devices(self.name)

    def delivery(self: Client, message_id: str) -> Delivery:
        """The copies of a fanned-out message the relay has not acknowledged yet."""
        pending = tuple(
            (entry.recipient, entry.recipient_device)
            for entry in self._store.outbox()
            if entry.message_id.split(".", 1)[0] == message_id
        )
        return Delivery(message_id, pending)

    async def _learn_senders(self: Client, senders: set[tuple[str, int]]) -> None:
        """Before decrypting, verify the lists of companions we have not seen listed yet."""
        keys = self._protocol.device_keys
        for name in sorted({n for n, d in senders if d != PRIMARY_DEVICE_ID and (n, d) not in keys}):
            try:
                await self.refresh_devices(name)
            except Exception as error:
                # Whatever the list's fault, the message's own check (its sender is not listed) holds it.
                logger.warning("%s: cannot verify %s's device list: %s", self.name, name, error)

    def _transcript(self: Client, sender: str, content: envelope.Envelope) -> tuple[str, int, bytes]:
        """The contact, content type and body of a transcript our own device sent; refuses any other."""
        if sender != self.name:
            raise DecodeError("a transcript from another account")
        return decode_transcript(content.body)


async def link_companion(
    path: str | Path,
    relay_url: str,
    *,
    on_offer: Callable[[LinkOffer], None],
    rng: Rng = os.urandom,
    timeout: float = 300.0,
    **options: Any,
) -> Client:
    """Make this machine a companion: show an offer, wait for the primary, register; returns the client.

    ``on_offer`` shows the offer (QR and text code) to the user.  The store file is written only
    after the relay registered the companion, so an abandoned or refused link leaves nothing behind.
    """
    from client.client import Client
    from client.store import Store
    from e2e import records

    if Path(path).exists():
        raise FileExistsError(f"{path} already exists")
    identity = KeyPair.generate(rng)
    registration_id = int.from_bytes(rng(4), "big") % 16380 + 1
    offer = LinkOffer.generate(identity.public_key, rng)
    on_offer(offer)
    opened = await wait_for_link(relay_url, offer, timeout=timeout)
    connection = await register_companion(relay_url, opened, identity, registration_id, rng=rng)
    await connection.close()
    metadata = opened.payload.metadata
    store = Store(path)
    with store.transaction():
        store.create_account(
            metadata.account, metadata.device_id, records.serialize_identity(identity, registration_id)
        )
        store.mark_registered()
        signed = opened.payload.signed_device_list
        store.put_device_list(metadata.account, opened.device_list.version, signed.encode())
    return Client(store, relay_url, rng=rng, **options)
