"""The relay's group operations: signed membership changes, member lists and server-side fan-out.

Theory
------
A group is a relay concept (the WhatsApp model): the relay knows who is in it, so that a member
uploads one ciphertext and the relay queues it for every member device.  What the relay does *not*
decide is who is in it.  Every membership change is a :class:`e2e.group_membership.MembershipChange`
signed by an admin's identity key (or, to leave, by the leaving member's), chained by hash to the
one before; the relay checks it exactly as a member's client will (the core's
:func:`~e2e.group_membership.verify_membership_change`, a signature check), commits it with the
new member list, and fans the change out to every device of the old and the new members.  A
change the relay invented, replayed or reordered would fail the same check in every client.

Operations (``docs/relay-protocol.md``, "Groups"):

* ``group_create`` / ``group_add`` / ``group_remove`` / ``group_leave`` ``{change}``: a signed change,
  signed by this connection's identity key, of the kind the op names;
* ``group_members`` ``{group_id}``: the current epoch, members and newest change (members only);
* ``group_history`` ``{group_id, after_epoch}``: the changes after an epoch, for a member
  verifying the chain from the group's creation (members only);
* ``group_send`` ``{group_id, client_id, type, body}``: one body queued for every member device but
  the sender's in one commit, deduplicated by client id, acknowledged per recipient with ``ack``
  like any message (pushes carry ``group_id``).

Membership changes and group sends are metered per device by token buckets of their own
(``Limits.group_change_rate``, ``Limits.group_send_rate``): a group send costs the relay one write
per member device.

What this module does not know
------------------------------
SQL (the store does one operation per call), sender keys or any message format but the membership
change's; the bodies it fans out are opaque.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from e2e.errors import DecodeError
from e2e.group_membership import (
    GROUP_ID_LENGTH,
    MembershipChainError,
    MembershipChange,
    MembershipError,
    MembershipOrderError,
    MembershipSignatureError,
    NotAnAdminError,
    verify_membership_change,
)
from server import protocol as p
from server.protocol import ErrorCode, ProtocolError, Request
from server.relay import _STORE_ERRORS, _Connection, _log, _op, _TokenBucket, log_event
from server.store import (
    GROUP_CHANGE_TYPE,
    DeviceAddress,
    GroupChange,
    GroupEnqueueResult,
    GroupExistsError,
    GroupMemberRecord,
    GroupRecord,
    NewGroupMessage,
    NotAMemberError,
    StaleGroupError,
    TooManyGroupsError,
    UnknownGroupError,
)

__all__: list[str] = []

_MAX_CLIENT_ID = 64
# A change lists each member once: a length byte, up to 64 bytes of name, a 33-byte key and a flag.
_MEMBER_BYTES = 1 + 64 + 33 + 1
_CHANGE_OVERHEAD = 1 + GROUP_ID_LENGTH + 8 + 32 + 33 + 2 + 64
# The most change bytes one group_history answer carries (base64 makes it a third larger).
_HISTORY_BYTES = 256 * 1024

_STORE_ERRORS.update(
    {
        UnknownGroupError: ErrorCode.UNKNOWN_GROUP,
        NotAMemberError: ErrorCode.NOT_A_MEMBER,
        GroupExistsError: ErrorCode.GROUP_EXISTS,
        StaleGroupError: ErrorCode.STALE_GROUP,
        TooManyGroupsError: ErrorCode.TOO_MANY_GROUPS,
    }
)


def _bucket(conn: _Connection, kind: str, rate: float, burst: int) -> _TokenBucket:
    """The device's token bucket for ``kind`` (kept on the relay, across the device's connections)."""
    assert conn.device is not None
    buckets: dict[tuple[str, DeviceAddress], _TokenBucket] = conn.relay.__dict__.setdefault(
        "_group_buckets", {}
    )
    key = (kind, conn.device)
    bucket = buckets.get(key)
    if bucket is None:
        if len(buckets) > 100_000:
            buckets.clear()
        bucket = buckets[key] = _TokenBucket(rate, burst, asyncio.get_running_loop().time())
    return bucket


def _take(conn: _Connection, kind: str, rate: float, burst: int) -> None:
    wait = _bucket(conn, kind, rate, burst).try_take(1, asyncio.get_running_loop().time())
    if wait > 0:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED, f"too many {kind.replace('_', ' ')}s", retry_after=round(wait + 0.0005, 3)
        )


def _group_id(fields: dict[str, Any]) -> bytes:
    return p.field_bytes(fields, "group_id", max_length=GROUP_ID_LENGTH, exact=GROUP_ID_LENGTH)


async def _member_group(conn: _Connection, group_id: bytes) -> GroupRecord:
    """The group, if this connection's account is in it (``unknown_group`` / ``not_a_member``)."""
    assert conn.device is not None
    record = await conn.relay.store.group(group_id)
    if record is None:
        raise ProtocolError(ErrorCode.UNKNOWN_GROUP, "no such group")
    if record.member(conn.device.account) is None:
        raise ProtocolError(ErrorCode.NOT_A_MEMBER, "this account is not a member of the group")
    return record


def _check_kind(op: str, account: str, old: MembershipChange, new: MembershipChange) -> None:
    """The change must be of the kind its op names (so a client's intent and the relay's log agree)."""
    before, after = set(old.names), set(new.names)
    if op == "group_add":
        ok = after > before and all(new.member(m.name) == m for m in old.members)
    elif op == "group_remove":
        ok = after < before and all(old.member(m.name) == m for m in new.members)
    else:
        ok = after == before - {account} and account in before
    if not ok:
        what = {"group_add": "only adds members", "group_remove": "only removes members"}.get(
            op, "only removes the signer"
        )
        raise ProtocolError(ErrorCode.BAD_MEMBERSHIP, f"{op} takes a change that {what}")


async def _change(conn: _Connection, request: Request) -> None:
    assert conn.device is not None and conn.identity_key is not None
    limits = conn.limits
    _take(conn, "group_change", limits.group_change_rate, limits.group_change_burst)
    max_bytes = _CHANGE_OVERHEAD + _MEMBER_BYTES * limits.max_group_members
    data = p.field_bytes(request.fields, "change", max_length=max_bytes)
    try:
        parsed = MembershipChange.deserialize(data)
    except DecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_MEMBERSHIP, f"the membership change does not decode: {exc}"
        ) from None
    if parsed.signer != conn.identity_key:
        raise ProtocolError(
            ErrorCode.BAD_MEMBERSHIP, "the change must be signed by this account's identity key"
        )
    if len(parsed.members) > limits.max_group_members:
        raise ProtocolError(
            ErrorCode.TOO_MANY_MEMBERS, f"a group has at most {limits.max_group_members} members"
        )
    if request.op == "group_create":
        if await conn.relay.store.group(parsed.group_id) is not None:
            raise ProtocolError(ErrorCode.GROUP_EXISTS, "a group with this id exists")
        record = None
        previous = None
    else:
        record = await _member_group(conn, parsed.group_id)
        previous = MembershipChange.deserialize(record.change)
    try:
        verify_membership_change(data, previous)
    except MembershipSignatureError:
        raise ProtocolError(
            ErrorCode.INVALID_SIGNATURE, "the membership change's signature does not verify"
        ) from None
    except NotAnAdminError as exc:
        raise ProtocolError(ErrorCode.NOT_AN_ADMIN, str(exc)) from None
    except (MembershipOrderError, MembershipChainError) as exc:
        epoch = None if record is None else record.epoch
        raise ProtocolError(ErrorCode.STALE_GROUP, str(exc), epoch=epoch) from None
    except (MembershipError, DecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_MEMBERSHIP, str(exc)) from None
    if previous is not None:
        _check_kind(request.op, conn.device.account, previous, parsed)
    change = GroupChange(
        group_id=parsed.group_id,
        epoch=parsed.epoch,
        previous_digest=None if record is None else record.digest,
        digest=parsed.digest,
        change=data,
        members=tuple(GroupMemberRecord(m.name, m.identity_key.serialize(), m.admin) for m in parsed.members),
        sender=conn.device,
    )
    recipients = await conn.relay.store.apply_group_change(
        change, conn.relay.clock(), limits.message_ttl, limits.max_groups_per_account
    )
    log_event(
        request.op,
        conn=conn.number,
        device=conn.device,
        epoch=parsed.epoch,
        members=len(parsed.members),
        recipients=recipients,
    )
    conn.send(p.ok(request.id, epoch=parsed.epoch, recipients=recipients))


for _name in ("group_create", "group_add", "group_remove", "group_leave"):
    _op(_name)(_change)


@_op("group_members")
async def _group_members(conn: _Connection, request: Request) -> None:
    record = await _member_group(conn, _group_id(request.fields))
    members = [
        {"account": m.account, "identity_key": p.b64(m.identity_key), "admin": m.admin}
        for m in record.members
    ]
    conn.send(p.ok(request.id, epoch=record.epoch, members=members, change=p.b64(record.change)))


@_op("group_history")
async def _group_history(conn: _Connection, request: Request) -> None:
    fields = request.fields
    group_id = _group_id(fields)
    after = p.field_int(fields, "after_epoch", low=-1, high=2**62, optional=True)
    await _member_group(conn, group_id)
    limit = conn.limits.max_group_history
    changes = await conn.relay.store.group_changes(group_id, -1 if after is None else after, limit + 1)
    # One answer stays well inside a frame: at least one change, then as many as fit in the budget.
    answer: list[str] = []
    size = 0
    for change in changes[:limit]:
        if answer and size + len(change) > _HISTORY_BYTES:
            break
        answer.append(p.b64(change))
        size += len(change)
    conn.send(p.ok(request.id, changes=answer, more=len(answer) < len(changes)))


@_op("group_send")
async def _group_send(conn: _Connection, request: Request) -> None:
    assert conn.device is not None
    fields = request.fields
    limits = conn.limits
    group_id = _group_id(fields)
    client_id = p.field_str(fields, "client_id", max_length=_MAX_CLIENT_ID)
    message_type = p.field_int(fields, "type", low=0, high=255)
    if message_type == GROUP_CHANGE_TYPE:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"type {GROUP_CHANGE_TYPE} is the relay's membership changes"
        )
    body = p.field_bytes(fields, "body", max_length=limits.max_body_bytes)
    _take(conn, "group_send", limits.group_send_rate, limits.group_send_burst)
    record = await _member_group(conn, group_id)
    if len(record.members) > limits.max_group_members:
        # Only a relay restarted with a smaller cap holds such a group; it must shrink first.
        raise ProtocolError(
            ErrorCode.TOO_MANY_MEMBERS,
            f"the group is over this relay's cap of {limits.max_group_members} members",
        )
    message = NewGroupMessage(conn.device, group_id, client_id, message_type, body)
    started = time.perf_counter()
    future = conn.relay.store.enqueue_group(
        message, conn.relay.clock(), limits.message_ttl, limits.max_queue_messages, limits.max_queue_bytes
    )

    def answer(result: GroupEnqueueResult) -> dict[str, Any]:
        if _log.isEnabledFor(logging.INFO):
            log_event(
                "group_send",
                conn=conn.number,
                device=conn.device,
                bytes=len(body),
                recipients=result.recipients,
                server_id=result.server_id,
                duplicate=result.duplicate,
                ms=f"{(time.perf_counter() - started) * 1000:.1f}",
            )
        return p.ok(
            request.id, server_id=result.server_id, duplicate=result.duplicate, recipients=result.recipients
        )

    wait = conn.pipeline(request, future, answer)
    if wait is not None:
        await wait
