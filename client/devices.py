"""Linked devices on the client: the relay's device-list and linking operations, and both halves of a link.

Theory
------
A link is three steps (``docs/devices.md``):

1. The **companion** draws a fresh linking secret and shows a :class:`~e2e.linking.LinkOffer` (QR
   code and text code, :func:`offer_qr`); it then polls the relay's mailbox for the offer
   (:func:`wait_for_link`).  It is not registered: ``link_fetch`` needs no authentication.
2. The **primary** reads the code and calls :func:`link_device`: it picks the next free device id,
   signs the account signature and the next device list, publishes the list
   (``put_device_list``) and leaves the sealed payload in the mailbox (``link_offer``).  The list
   goes first, so the companion can register as soon as it has the payload.
3. The companion opens the payload (:func:`e2e.linking.open_linking_payload`: a relay that altered
   or swapped anything is caught here), signs its device signature and registers with
   ``register_companion`` (:func:`register_companion`), which authenticates its connection.

:func:`unlink_device` publishes the next list without the device; the relay logs it out and deletes
its queue.  :class:`DeviceListBook` is the fetching side: it verifies every list it is shown
against the account's primary identity key and refuses rollbacks (``e2e.devices``).

What this module does not know
------------------------------
Sessions and messages (:mod:`client.fanout` sends to every listed device), the terminal, storage.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from collections.abc import Callable

import segno

from client.transport import REGISTER_LABEL, Connection, ConnectionLost, RelayError, proof_transcript
from e2e.devices import (
    PRIMARY_DEVICE_ID,
    DeviceList,
    DeviceListError,
    DeviceListRollbackError,
    LinkingMetadata,
    SignedDeviceList,
    accept_device_list,
    sign_account,
    sign_device_list,
    verify_device_list,
)
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.linking import LinkingPayload, LinkOffer, OpenedLink, open_linking_payload, seal_linking_payload

__all__ = [
    "LinkTimeoutError",
    "DeviceListBook",
    "offer_qr",
    "fetch_device_list",
    "publish_device_list",
    "initial_device_list",
    "link_device",
    "unlink_device",
    "wait_for_link",
    "register_companion",
]


class LinkTimeoutError(TimeoutError):
    """No linking payload arrived at the mailbox in time."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise RelayError("bad_response", f"the relay's {what} is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise RelayError("bad_response", f"the relay's {what} is not base64") from None


def offer_qr(offer: LinkOffer) -> str:
    """The offer's text code drawn as a QR code for a terminal (``segno``'s compact text form)."""
    out = io.StringIO()
    segno.make(offer.to_code(), error="m").terminal(out=out, compact=True)
    return out.getvalue()


async def fetch_device_list(connection: Connection, account: str) -> SignedDeviceList | None:
    """The account's newest signed list as the relay serves it (unverified), or None if it has none."""
    try:
        response = await connection.request("get_device_list", account=account)
    except RelayError as exc:
        if exc.code == "not_found":
            return None
        raise
    return SignedDeviceList.decode(_unb64(response.get("device_list"), "device list"))


async def publish_device_list(connection: Connection, signed: SignedDeviceList) -> list[int]:
    """Publish a list (the primary only); returns the device ids the relay removed."""
    response = await connection.request("put_device_list", device_list=_b64(signed.encode()))
    removed = response.get("removed", [])
    return [int(device_id) for device_id in removed] if isinstance(removed, list) else []


def initial_device_list(account: str, primary_identity_key: PublicKey, now: int) -> DeviceList:
    """Version 1: the primary alone (what an account without a published list means)."""
    return DeviceList.of(account, 1, now, [(PRIMARY_DEVICE_ID, primary_identity_key)])


async def _current_list(connection: Connection, account: str, identity: KeyPair, now: int) -> DeviceList:
    signed = await fetch_device_list(connection, account)
    if signed is None:
        return initial_device_list(account, identity.public_key, now)
    return verify_device_list(signed, identity.public_key, account)


async def link_device(
    connection: Connection,
    identity: KeyPair,
    offer: LinkOffer,
    *,
    rng: Rng = os.urandom,
    now: Callable[[], float] = time.time,
    max_devices: int = 5,
) -> tuple[int, DeviceList]:
    """The primary links the companion that showed ``offer``; returns its device id and the new list."""
    assert connection.account is not None
    account = connection.account
    stamp = int(now())
    current = await _current_list(connection, account, identity, stamp)
    if offer.identity_key in {entry.identity_key for entry in current.devices}:
        raise DeviceListError("this identity key is already on the device list")
    if len(current.devices) >= max_devices:
        raise DeviceListError(f"the account already has {len(current.devices)} devices")
    # Device ids are never reused: a contact's session with an unlinked device must not carry over
    # to a new one.  Every change bumps the version, so ids above it are fresh.
    device_id = max(current.version, *current.device_ids) + 1
    metadata = LinkingMetadata(account, device_id, stamp)
    account_signature = sign_account(identity.private_key, metadata, offer.identity_key, rng)
    new_list = current.with_device(device_id, offer.identity_key, stamp)
    signed = sign_device_list(identity.private_key, new_list, rng)
    await publish_device_list(connection, signed)
    payload = LinkingPayload(metadata, identity.public_key, account_signature, signed)
    await connection.request(
        "link_offer", mailbox=_b64(offer.mailbox), payload=_b64(seal_linking_payload(offer, payload, rng))
    )
    return device_id, new_list


async def unlink_device(
    connection: Connection,
    identity: KeyPair,
    device_id: int,
    *,
    rng: Rng = os.urandom,
    now: Callable[[], float] = time.time,
) -> DeviceList:
    """The primary removes ``device_id``; the relay logs it out and deletes its queue."""
    assert connection.account is not None
    stamp = int(now())
    current = await _current_list(connection, connection.account, identity, stamp)
    new_list = current.without_device(device_id, stamp)
    await publish_device_list(connection, sign_device_list(identity.private_key, new_list, rng))
    return new_list


async def wait_for_link(
    url: str,
    offer: LinkOffer,
    *,
    timeout: float = 300.0,
    poll_interval: float = 0.5,
    origin: str | None = None,
) -> OpenedLink:
    """The companion polls its mailbox until the primary's payload arrives, then opens and checks it.

    Raises :class:`LinkTimeoutError`, or whatever :func:`e2e.linking.open_linking_payload` raises
    for a payload that was altered (the mailbox is emptied by the fetch either way).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    connection: Connection | None = None
    try:
        while True:
            if connection is None:
                connection = await Connection.open(url, origin=origin)
            try:
                response = await connection.request("link_fetch", mailbox=_b64(offer.mailbox))
            except RelayError as exc:
                if exc.code != "not_found":
                    raise
            except ConnectionLost:
                # The relay closes connections that never authenticate; open another.
                connection = None
                continue
            else:
                return open_linking_payload(offer, _unb64(response.get("payload"), "linking payload"))
            if loop.time() >= deadline:
                raise LinkTimeoutError("no linking payload arrived; link the device from the primary")
            await asyncio.sleep(poll_interval)
    finally:
        if connection is not None:
            await connection.close()


async def register_companion(
    url: str,
    opened: OpenedLink,
    identity: KeyPair,
    registration_id: int,
    *,
    rng: Rng = os.urandom,
    origin: str | None = None,
) -> Connection:
    """Register the linked companion (device signature and proof); returns an authenticated connection."""
    metadata = opened.payload.metadata
    device_identity = opened.device_identity(identity.private_key, rng)
    connection = await Connection.open(url, origin=origin)
    try:
        transcript = proof_transcript(
            REGISTER_LABEL, connection.challenge, metadata.account, metadata.device_id, connection.origin
        )
        await connection.request(
            "register_companion",
            account=metadata.account,
            device_id=metadata.device_id,
            identity_key=_b64(identity.public_key.serialize()),
            registration_id=registration_id,
            device_identity=_b64(device_identity.encode()),
            signature=_b64(identity.sign(transcript, rng)),
        )
    except BaseException:
        await connection.close()
        raise
    connection.account, connection.device_id = metadata.account, metadata.device_id
    return connection


class DeviceListBook:
    """The device lists a client has verified, per account, with the rollback check.

    :meth:`check` verifies a signed list against the account's primary identity key (the key its
    safety number covers) and against the newest list seen for that account; it raises
    (:class:`~e2e.errors.InvalidSignatureError`, :class:`~e2e.devices.DeviceListRollbackError`, …)
    and changes nothing on failure.
    """

    def __init__(self) -> None:
        self._seen: dict[str, DeviceList] = {}

    def seen(self, account: str) -> DeviceList | None:
        return self._seen.get(account)

    def forget(self, account: str) -> None:
        """Drop what was seen for ``account`` (its primary key was replaced)."""
        self._seen.pop(account, None)

    def remember(self, device_list: DeviceList) -> None:
        """Adopt a list already verified (e.g. one loaded from the local store)."""
        self._seen[device_list.account] = device_list

    def check(
        self, account: str, primary_identity_key: PublicKey, signed: SignedDeviceList | None
    ) -> DeviceList:
        seen = self._seen.get(account)
        if signed is None:
            if seen is not None:
                raise DeviceListRollbackError("the relay no longer serves a device list it served before")
            # No list published: the primary alone, as version 0 (any published list is newer).
            return DeviceList.of(account, 0, 0, [(PRIMARY_DEVICE_ID, primary_identity_key)])
        checked = verify_device_list(signed, primary_identity_key, account)
        accepted = accept_device_list(seen, checked)
        self._seen[account] = accepted
        return accepted
