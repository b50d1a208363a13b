"""The relay's linked-device operations: device lists, companion registration and linking mailboxes.

Theory
------
These handlers join :mod:`server.relay`'s operation table (the relay imports this module once, at
the end of its own).  They check signatures with :mod:`e2e.devices` and nothing else from the core:

* ``put_device_list`` (the primary only): the signed list must verify under the account's primary
  identity key (the key device 1 registered with), be the account's, list at most
  ``1 + Limits.max_companions`` devices and carry a version above the stored one.  Every device the
  new list drops (or lists with another key) is deleted with its prekeys and queue, and its
  connection closes with 4005.
* ``get_device_list``: any authenticated device may read any account's newest signed list; the
  fetching client verifies it against the primary key its safety number covers.
* ``register_companion`` (unauthenticated, like ``register``): a proof of possession of the
  companion's identity key, and its :class:`~e2e.devices.DeviceIdentity` whose account signature
  verifies under the primary's key and whose device signature verifies under the companion's; the
  stored list must name the companion's device id with that key.  Any failure closes with 4001.
* ``link_offer`` (the primary only) and ``link_fetch`` (unauthenticated): a mailbox for one sealed
  linking payload, taken at most once.  The relay cannot read or alter what it carries (``e2e.linking``).

What this module does not know
------------------------------
SQL (the store), the linking payload's contents, sessions.
"""

from __future__ import annotations

from typing import Any

from e2e.devices import (
    PRIMARY_DEVICE_ID,
    DeviceIdentity,
    DeviceList,
    DeviceListError,
    SignedDeviceList,
    verify_device_list,
)
from e2e.errors import DecodeError, InvalidSignatureError
from e2e.keys import PublicKey
from e2e.linking import MAILBOX_LENGTH
from server import protocol as p
from server.device_store import NotOnDeviceListError, RelayStore
from server.protocol import ErrorCode, ProtocolError, Request
from server.relay import _Connection, _ec_public_key, _op, log_event
from server.store import DeviceAddress, UnknownDeviceError

__all__ = ["MAX_DEVICE_LIST_BYTES", "MAX_LINK_PAYLOAD_BYTES"]

MAX_DEVICE_LIST_BYTES = 4096
MAX_LINK_PAYLOAD_BYTES = 8192
_MAX_DEVICE_IDENTITY_BYTES = 1024
_SIGNATURE_LENGTH = 64
_MAX_REGISTRATION_ID = 2**32 - 1


def _store(conn: _Connection) -> RelayStore:
    store: Any = conn.relay.store
    return store  # type: ignore[no-any-return]


def _require_primary(conn: _Connection) -> DeviceAddress:
    assert conn.device is not None
    if conn.device.device_id != PRIMARY_DEVICE_ID:
        raise ProtocolError(ErrorCode.NOT_PRIMARY, "only the account's primary device (1) may do this")
    return conn.device


async def _primary_key(conn: _Connection, account: str) -> PublicKey:
    try:
        return PublicKey.deserialize(
            await _store(conn).identity_key(DeviceAddress(account, PRIMARY_DEVICE_ID))
        )
    except UnknownDeviceError:
        raise ProtocolError(ErrorCode.UNKNOWN_ACCOUNT, "the account has no primary device") from None


def _listed_devices(signed: bytes) -> DeviceList:
    """Decode a list the relay verified before storing it."""
    return DeviceList.decode(SignedDeviceList.decode(signed).list_bytes)


@_op("put_device_list")
async def _put_device_list(conn: _Connection, request: Request) -> None:
    device = _require_primary(conn)
    assert conn.identity_key is not None
    signed = p.field_bytes(request.fields, "device_list", max_length=MAX_DEVICE_LIST_BYTES)
    try:
        device_list = verify_device_list(signed, conn.identity_key, device.account)
    except DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'device_list': {exc}") from None
    except InvalidSignatureError:
        raise ProtocolError(
            ErrorCode.INVALID_SIGNATURE, "the device list is not signed by this account's primary"
        ) from None
    except DeviceListError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'device_list': {exc}") from None
    cap = min(1 + conn.limits.max_companions, conn.limits.max_devices_per_account)
    if len(device_list.devices) > cap:
        raise ProtocolError(
            ErrorCode.TOO_MANY_DEVICES,
            f"an account has at most {cap} devices (its primary and {cap - 1} companions)",
        )
    listed = {entry.device_id: entry.identity_key.serialize() for entry in device_list.devices}
    update = await _store(conn).put_device_list(
        device.account, device_list.version, signed, listed, conn.relay.clock()
    )
    log_event(
        "device_list",
        conn=conn.number,
        device=device,
        version=update.version,
        devices=len(listed),
        removed=",".join(map(str, update.removed)) or "-",
    )
    conn.send(p.ok(request.id, version=update.version, removed=list(update.removed)))


@_op("get_device_list")
async def _get_device_list(conn: _Connection, request: Request) -> None:
    account = p.account_name(request.fields)
    stored = await _store(conn).device_list(account)
    if stored is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "this account has published no device list")
    conn.send(p.ok(request.id, account=account, version=stored.version, device_list=p.b64(stored.signed)))


@_op("register_companion", authenticated=False)
async def _register_companion(conn: _Connection, request: Request) -> None:
    fields = request.fields
    account = p.account_name(fields)
    device_id = p.device_id(fields)
    identity_bytes = _ec_public_key(fields, "identity_key")
    registration_id = p.field_int(fields, "registration_id", low=0, high=_MAX_REGISTRATION_ID)
    identity_blob = p.field_bytes(fields, "device_identity", max_length=_MAX_DEVICE_IDENTITY_BYTES)
    signature = p.field_bytes(fields, "signature", max_length=_SIGNATURE_LENGTH, exact=_SIGNATURE_LENGTH)
    conn.check_challenge()
    identity_key = PublicKey.deserialize(identity_bytes)
    transcript = p.proof_transcript(p.REGISTER_LABEL, conn.challenge, account, device_id, conn.relay.origin)
    try:
        identity_key.verify(transcript, signature)
    except InvalidSignatureError:
        raise conn.fail_auth(ErrorCode.BAD_PROOF, "the registration proof does not verify") from None
    try:
        identity = DeviceIdentity.decode(identity_blob)
    except DecodeError as exc:
        raise conn.fail_auth(ErrorCode.BAD_REQUEST, f"'device_identity': {exc}") from None
    if (
        identity.identity_key != identity_key
        or identity.metadata.account != account
        or identity.metadata.device_id != device_id
    ):
        raise conn.fail_auth(ErrorCode.BAD_REQUEST, "the device identity is for another device or key")
    try:
        primary_key = await _primary_key(conn, account)
    except ProtocolError as exc:
        raise conn.fail_auth(exc.code, str(exc)) from None
    try:
        identity.verify(primary_key)
    except (InvalidSignatureError, DeviceListError):
        raise conn.fail_auth(
            ErrorCode.INVALID_SIGNATURE, "the account or device signature does not verify"
        ) from None
    store = _store(conn)
    stored = await store.device_list(account)
    try:
        listed_key = _listed_devices(stored.signed).identity_key(device_id) if stored else None
    except DeviceListError:
        listed_key = None
    if stored is None or listed_key != identity_key:
        raise conn.fail_auth(ErrorCode.NOT_LINKED, "the account's device list does not name this device")
    device = DeviceAddress(account, device_id)
    try:
        created = await store.register_companion(
            device, identity_bytes, registration_id, stored.version, conn.relay.clock()
        )
    except NotOnDeviceListError as exc:
        raise conn.fail_auth(ErrorCode.NOT_LINKED, str(exc)) from None
    log_event("companion_registered", conn=conn.number, device=device, created=created)
    await conn.become(request, device, identity_key)


def _mailbox(fields: dict[str, Any]) -> bytes:
    return p.field_bytes(fields, "mailbox", max_length=MAILBOX_LENGTH, exact=MAILBOX_LENGTH)


@_op("link_offer")
async def _link_offer(conn: _Connection, request: Request) -> None:
    device = _require_primary(conn)
    mailbox = _mailbox(request.fields)
    payload = p.field_bytes(request.fields, "payload", max_length=MAX_LINK_PAYLOAD_BYTES)
    await _store(conn).put_link_payload(
        device.account, mailbox, payload, conn.relay.clock(), conn.limits.link_ttl
    )
    log_event("link_offer", conn=conn.number, device=device, size=len(payload))
    conn.send(p.ok(request.id, expires_in=conn.limits.link_ttl))


@_op("link_fetch", authenticated=False)
async def _link_fetch(conn: _Connection, request: Request) -> None:
    mailbox = _mailbox(request.fields)
    payload = await _store(conn).take_link_payload(mailbox, conn.relay.clock())
    if payload is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "nothing waits at this mailbox (yet)")
    log_event("link_fetch", conn=conn.number, address=conn.address, size=len(payload))
    conn.send(p.ok(request.id, payload=p.b64(payload)))
