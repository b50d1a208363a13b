"""Group conversations for :class:`client.Client`: signed membership, Sender Keys, fan-out, recovery.

What this module owns
---------------------
:class:`GroupsMixin`, the group half of :class:`client.Client` (``docs/groups.md``):

* ``create_group``, ``add_members``, ``remove_members``, ``leave``: make a
  :class:`e2e.group_membership.MembershipChange` signed by our identity key, publish it through the
  relay (``group_create`` / ``group_add`` / ``group_remove`` / ``group_leave``), adopt it locally;
* ``send_group``: one Sender Keys encryption (:class:`e2e.group_cipher.GroupCipher`), committed to
  the group outbox with the advanced chain, then one relay ``group_send`` that the relay fans out;
* the receive side of group pushes: membership changes are verified against the last verified one
  (a gap is filled from the relay's ``group_history`` and verified from the group's creation), and
  group messages are decrypted with the sender's key;
* the pairwise content types of :mod:`client.envelope`: ``SENDER_KEY`` (our distribution message
  for a group, over the pairwise session) and ``SENDER_KEY_RETRY`` (asking a sender for it again).

Membership the relay cannot forge
---------------------------------
Nothing the relay says about a group is believed: only changes that verify
(:func:`e2e.group_membership.verify_membership_change`) are adopted; a replayed, reordered,
forked or unsigned change is refused, recorded and reported (:class:`client.events.GroupRefused`).
A gap (or a group we were just added to) is filled from ``group_history`` and verified from the
group's creation; the need is committed with the push that showed it (``group_sync``), and group
messages and sender keys that arrive before the chain verifies are held, bounded, until it does.
Our sender key goes only to a member of the verified list whose signed identity key is the one
our pairwise session with it is bound to (a "ghost" the relay adds gets nothing).  A distribution
message from someone who is not in the verified list is refused, and so is a group message.

Removal rotates: adopting a change that removes anyone makes a new sender chain
(:meth:`GroupCipher.rotate`) in the same transaction, forgets to whom the old one was given, and
drops the removed members' sender keys; the new chain goes only to the remaining members, so a
removed member reads nothing sent afterwards.  A new member is given our chain at its *current*
iteration, so it cannot read what was sent before it joined.

Recovery (bounded)
------------------
A group message whose chain we do not hold (the distribution never arrived, or local state was
lost) is kept in ``group_pending`` and we send its sender one ``SENDER_KEY_RETRY`` over the
pairwise session (at most :data:`MAX_RETRY_REQUESTS` per sender chain, at most
:data:`MAX_PENDING_PER_SENDER` held messages per sender device).  The sender answers a current
member with exactly the distribution message it gave that device before (so a retry never reaches
further back than the member was entitled to), at most :data:`MAX_RETRY_ANSWERS` times per chain;
when it arrives the held messages are decrypted.  A hostile member can therefore make us send at
most three small messages per chain, and we hold at most a bounded number of its ciphertexts.

Crash safety
------------
As for sessions (docs/client.md): every change a push causes (verified change, rotated chain,
processed sender key, decrypted plaintext, held ciphertext) commits in the receive batch's
transaction before the relay is acknowledged.  An outgoing group message is in ``group_outbox``
together with the chain state that produced it before it is sent, and goes again under the same
client id after a crash (the relay removes the duplicate).  Our own membership changes come back
to our own device from the relay, so a change the relay committed is adopted even if we crashed
before adopting it.  Which member device holds our current chain is recorded in the transaction
that queues the distribution message in the pairwise outbox, and ``send_group`` first hands the
chain to every member device that lacks it, so a crash between a change and the distribution only
delays it.

What it does not know
---------------------
SQL (:mod:`client.group_store`), frames (:mod:`client.transport`) and the mathematics (:mod:`e2e`).
Devices: our sender key goes to device 1 of each member and to every device we have a session with.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from client import envelope, transport
from client.errors import ClientError, ClosedError, IdentityChanged
from client.events import GroupMessage, GroupRefused, MembershipChanged
from client.group_store import GroupRow, GroupStore, SenderKeyStoreAdapter
from e2e.address import ProtocolAddress
from e2e.errors import DecodeError, E2EError, NoSenderKeyError, UntrustedIdentityError
from e2e.group_cipher import GroupCipher, SenderKeyName
from e2e.group_membership import (
    GROUP_ID_LENGTH,
    GroupMember,
    MembershipChange,
    MembershipError,
    create_membership,
    next_membership,
    verify_membership_change,
)
from e2e.keys import KeyPair, PublicKey
from e2e.sender_key_messages import SenderKeyDistributionMessage, SenderKeyFraming, SenderKeyMessage

if TYPE_CHECKING:
    from client.client import _Incoming

__all__ = [
    "GROUP_CHANGE_TYPE",
    "GROUP_CONTENT_TYPES",
    "SENDER_KEY_MESSAGE_TYPE",
    "MAX_RETRY_REQUESTS",
    "MAX_RETRY_ANSWERS",
    "MAX_PENDING_PER_SENDER",
    "MAX_PENDING_KEYS_PER_SENDER",
    "GroupError",
    "GroupsMixin",
]

logger = logging.getLogger("client.groups")

GROUP_CHANGE_TYPE = 250
"""The relay's message type for a membership change it fans out (``server.store.GROUP_CHANGE_TYPE``)."""
SENDER_KEY_MESSAGE_TYPE = 7
"""libsignal's ``CiphertextMessageType::SenderKey``: a group message's type on the relay."""
GROUP_CONTENT_TYPES = frozenset((envelope.CONTENT_TEXT, envelope.CONTENT_ATTACHMENT))
"""What a group message may carry: text, or an attachment pointer (the blob itself never goes
through the relay's queue).  Anything else arriving in a group message is refused and shown."""
MAX_RETRY_REQUESTS = 3
MAX_RETRY_ANSWERS = 3
MAX_PENDING_PER_SENDER = 200
MAX_PENDING_KEYS_PER_SENDER = 20
_MAX_TITLE = 64
_CONTENT_VERSION = 1


class GroupError(ClientError):
    """A group operation that cannot be done (unknown group, not a member, not an admin, a bad name)."""


def distribution_id(group_id: bytes) -> uuid.UUID:
    """The Sender Keys distribution of a group: its 16-byte id as a UUID."""
    return uuid.UUID(bytes=group_id)


# The two pairwise contents, inside the envelope (versioned here as well).


def encode_sender_key(group_id: bytes, title: str, distribution: bytes) -> bytes:
    """``0x01 ‖ group id (16) ‖ title length (u8) ‖ title ‖ distribution message``."""
    raw = title.encode("utf-8")[:_MAX_TITLE]
    return bytes((_CONTENT_VERSION,)) + group_id + bytes((len(raw),)) + raw + distribution


def decode_sender_key(body: bytes) -> tuple[bytes, str, bytes]:
    if len(body) < 2 + GROUP_ID_LENGTH or body[0] != _CONTENT_VERSION:
        raise DecodeError("a sender-key content is truncated or of an unknown version")
    group_id = body[1 : 1 + GROUP_ID_LENGTH]
    length = body[1 + GROUP_ID_LENGTH]
    start = 2 + GROUP_ID_LENGTH
    if length > _MAX_TITLE or len(body) < start + length:
        raise DecodeError("a sender-key content's title is malformed")
    title = body[start : start + length].decode("utf-8", errors="replace")
    return group_id, title, body[start + length :]


def encode_retry(group_id: bytes, chain_id: int) -> bytes:
    """``0x01 ‖ group id (16) ‖ chain id (u32)``."""
    return bytes((_CONTENT_VERSION,)) + group_id + struct.pack(">I", chain_id)


def decode_retry(body: bytes) -> tuple[bytes, int]:
    if len(body) != 1 + GROUP_ID_LENGTH + 4 or body[0] != _CONTENT_VERSION:
        raise DecodeError("a retry request is malformed")
    return body[1 : 1 + GROUP_ID_LENGTH], struct.unpack(">I", body[1 + GROUP_ID_LENGTH :])[0]


class GroupsMixin:
    """The group methods of :class:`client.Client` (which provides the attributes used here)."""

    # Provided by Client.
    name: str
    device_id: int
    _identity_key: KeyPair
    _store: Any
    _rng: Callable[[int], bytes]
    _events: asyncio.Queue[object]
    _lock: Callable[[tuple[str, int]], asyncio.Lock]
    _cipher: Callable[[ProtocolAddress], Any]
    _committing: Callable[[str], Any]
    _start_session: Callable[..., None]
    _fetch_bundle: Callable[[str, int], Awaitable[Any]]
    _check_identity_unchanged: Callable[[str, int], None]
    _untrusted: Callable[..., IdentityChanged]
    _connection: Callable[[], Awaitable[transport.Connection]]
    _check_running: Callable[[], None]
    _now_ms: Callable[[], int]
    _outbox_empty: asyncio.Event
    _outbox_changed: asyncio.Event

    # -- set-up ----------------------------------------------------------------------------------

    def _init_groups(self) -> None:
        self._groups = GroupStore(self._store)
        self._group_cipher = GroupCipher(SenderKeyStoreAdapter(self._groups), SenderKeyFraming.LIBSIGNAL)
        self._group_after_commit: list[object] = []
        self._group_work: list[Callable[[], Awaitable[None]]] = []
        self._group_tasks: set[asyncio.Task[None]] = set()
        self._group_lock = asyncio.Lock()
        self._group_outbox_changed = asyncio.Event()
        # Members whose device list _distribute fetched in this run (at most once each).
        self._device_lists_fetched: set[str] = set()

    # -- reading ---------------------------------------------------------------------------------

    def groups(self) -> list[GroupRow]:
        """Every group we verified, with its title, epoch and whether we are still in it."""
        return self._groups.groups()

    def group_members(self, group_id: bytes) -> tuple[GroupMember, ...]:
        """The members of the newest verified change (name, signed identity key, admin)."""
        return self._verified(group_id).members

    def group_history(self, group_id: bytes, limit: int | None = None) -> list[Any]:
        """The group's plaintexts, oldest first (entries of :class:`client.group_store.GroupHistoryEntry`)."""
        return self._groups.history(group_id, limit)

    def group_refusals(self, group_id: bytes | None = None) -> list[tuple[bytes, str, int, str, str]]:
        """What was refused in groups: (group id, sender, device, what, error), oldest first."""
        return self._groups.refused(group_id)

    def group_pending(self, group_id: bytes) -> list[Any]:
        """Group ciphertexts held until their sender's key arrives."""
        return self._groups.pending(group_id)

    def _verified(self, group_id: bytes) -> MembershipChange:
        row = self._groups.group(group_id)
        if row is None:
            raise GroupError(f"no group {group_id.hex()}")
        return MembershipChange.deserialize(row.change)

    def _our_name(self, group_id: bytes) -> SenderKeyName:
        return SenderKeyName(self.name, self.device_id, distribution_id(group_id))

    # -- membership changes we make ----------------------------------------------------------------

    async def _member_for(self, name: str, admin: bool = False) -> GroupMember:
        """A member entry for ``name`` with the identity key our pairwise session is bound to
        (starting a session first when we have none, which records the key on first use)."""
        if name == self.name:
            return GroupMember(name, self._identity_key.public_key, admin)
        contact = self._store.contact(name)
        if contact is None:
            async with self._lock((name, 1)):
                peer = ProtocolAddress(name, 1)
                cipher = self._cipher(peer)
                if not cipher.has_session():
                    bundle = await self._fetch_bundle(name, 1)
                    try:
                        with self._committing(name):
                            self._start_session(peer, cipher, bundle)
                    except UntrustedIdentityError as error:
                        raise self._untrusted(name, 1, error) from error
            contact = self._store.contact(name)
            assert contact is not None
        if contact.changed_identity_key is not None:
            raise self._identity_changed(name, 1, contact.identity_key, contact.changed_identity_key)  # type: ignore[attr-defined]
        return GroupMember(name, PublicKey.deserialize(contact.identity_key), admin)

    async def _publish(self, op: str, change: MembershipChange, title: str | None = None) -> None:
        connection = await self._connection()
        await connection.group_change(op, change.serialized)
        with self._store.transaction():
            self._adopt(change.group_id, [change], title=title)
        self._group_committed()

    async def create_group(self, title: str, members: list[str]) -> bytes:
        """Create a group of us (its admin) and ``members``; returns its 16-byte id.

        Raises :class:`client.transport.RelayError` (e.g. ``unknown_account``, ``too_many_members``).
        """
        self._check_running()
        if not 0 < len(title.encode("utf-8")) <= _MAX_TITLE:
            raise GroupError(f"a group title is 1 to {_MAX_TITLE} bytes")
        names = sorted(set(members) - {self.name})
        async with self._group_lock:
            entries = [await self._member_for(self.name, admin=True)]
            entries += [await self._member_for(name) for name in names]
            change = create_membership(self._rng(GROUP_ID_LENGTH), entries, self._identity_key, self._rng)
            await self._publish("group_create", change, title=title)
        return change.group_id

    async def add_members(self, group_id: bytes, names: list[str]) -> None:
        """Add ``names`` (we must be an admin): signed, published, and our sender key goes to them."""
        self._check_running()
        async with self._group_lock:
            current = self._verified(group_id)
            new = [await self._member_for(n) for n in sorted(set(names) - set(current.names))]
            if not new:
                return
            change = self._next(current, [*current.members, *new])
            await self._publish("group_add", change)

    async def remove_members(self, group_id: bytes, names: list[str]) -> None:
        """Remove ``names`` (we must be an admin); every remaining member then rotates its sender key."""
        self._check_running()
        async with self._group_lock:
            current = self._verified(group_id)
            gone = set(names) & set(current.names)
            if not gone:
                return
            change = self._next(current, [m for m in current.members if m.name not in gone])
            await self._publish("group_remove", change)

    async def leave(self, group_id: bytes) -> None:
        """Leave the group (a change signed by us that removes only us)."""
        self._check_running()
        async with self._group_lock:
            current = self._verified(group_id)
            change = self._next(current, [m for m in current.members if m.name != self.name])
            await self._publish("group_leave", change)

    def _next(self, current: MembershipChange, members: list[GroupMember]) -> MembershipChange:
        try:
            return next_membership(current, members, self._identity_key, self._rng)
        except MembershipError as error:
            raise GroupError(str(error)) from error

    # -- adopting verified changes -----------------------------------------------------------------

    def _adopt(self, group_id: bytes, changes: list[MembershipChange], title: str | None = None) -> None:
        """Adopt verified ``changes`` (in order) inside the caller's transaction."""
        row = self._groups.group(group_id)
        before = (
            set() if row is None or not row.active else set(MembershipChange.deserialize(row.change).names)
        )
        last = changes[-1]
        for change in changes:
            self._groups.add_change(group_id, change.epoch, change.serialized)
        after = set(last.names)
        active = self.name in after
        self._groups.put_group(
            group_id,
            title or (row.title if row else group_id.hex()[:8]),
            last.epoch,
            last.serialized,
            active,
            self._now_ms(),
        )
        dist = distribution_id(group_id)
        removed = before - after
        added = after - before
        for name in removed:
            self._groups.remove_sender_keys(dist, name)
            self._groups.forget_shares(group_id, name)
        if not active:
            self._groups.remove_sender_keys(dist, self.name)
            self._groups.forget_shares(group_id)
        elif row is None or not row.active:
            # We have just joined (or created the group): a fresh chain of our own (our other
            # devices' chains, which may already have arrived, stay).
            self._groups.remove_sender_keys(dist, self.name, self.device_id)
            self._group_cipher.rotate(self._our_name(group_id), self._rng)
            self._groups.forget_shares(group_id)
        elif removed:
            # Removal rotates: nobody who held the old chain key reads what we send from now on.
            self._group_cipher.rotate(self._our_name(group_id), self._rng)
            self._groups.forget_shares(group_id)
        if active:
            self._group_work.append(lambda: self._distribute(group_id))
            for seq, sender, device, content in self._groups.pending_keys(group_id):
                self._groups.release_key(seq)
                self._on_sender_key(sender, device, content)
        self._group_after_commit.append(
            MembershipChanged(
                group_id,
                last.epoch,
                last.names,
                tuple(sorted(added)),
                tuple(sorted(removed)),
                last.signer_name() or _signer_of(changes, before, self._groups, group_id),
                we_left=not active,
            )
        )

    def _refuse(
        self, group_id: bytes, sender: str, device: int, what: str, error: BaseException
    ) -> GroupRefused:
        kind = type(error).__name__
        logger.warning(
            "%s: refused %s in group %s from %s/%d: %s", self.name, what, group_id.hex(), sender, device, kind
        )
        detail = f"{kind}: {error}"
        self._groups.refuse(group_id, sender, device, what, detail, self._now_ms())
        return GroupRefused(group_id, sender, device, what, detail)

    # -- the receive side (called inside the receive batch's transaction) --------------------------

    def _process_group(self, incoming: _Incoming) -> object | None:
        """A push the relay fanned out to a group: a membership change or a group message."""
        group_id = incoming.group_id
        assert group_id is not None
        if self._store.is_processed(incoming.sender, incoming.sender_device, incoming.client_id):
            return None
        self._store.mark_processed(
            incoming.sender, incoming.sender_device, incoming.client_id, self._now_ms()
        )
        if len(group_id) != GROUP_ID_LENGTH:
            return self._refuse(
                group_id, incoming.sender, incoming.sender_device, "group push", DecodeError("bad group id")
            )
        if incoming.type == GROUP_CHANGE_TYPE:
            return self._on_change(group_id, incoming)
        if incoming.type == SENDER_KEY_MESSAGE_TYPE:
            return self._on_group_message(group_id, incoming)
        return self._refuse(
            group_id,
            incoming.sender,
            incoming.sender_device,
            "group push",
            DecodeError(f"unknown type {incoming.type}"),
        )

    def _on_change(self, group_id: bytes, incoming: _Incoming) -> object | None:
        sender, device = incoming.sender, incoming.sender_device
        row = self._groups.group(group_id)
        try:
            parsed = MembershipChange.deserialize(incoming.body)
            if parsed.group_id != group_id:
                raise DecodeError("the change names another group than the push")
        except E2EError as error:
            return self._refuse(group_id, sender, device, "membership change", error)
        if row is not None and parsed.epoch <= row.epoch:
            canonical = f"membership:{group_id.hex()}:{parsed.epoch}"
            if (
                self._groups.change_at(group_id, parsed.epoch) == incoming.body
                and incoming.client_id == canonical
            ):
                # Our own change coming back, or one we fetched with the chain before its push came.
                return None
            try:
                verify_membership_change(incoming.body, MembershipChange.deserialize(row.change))
            except E2EError as error:
                return self._refuse(group_id, sender, device, "membership change", error)
        if row is None or parsed.epoch > row.epoch + 1:
            # A group we do not know yet (we were just added) or a gap: fetch the chain and verify it
            # from the group's creation.  The relay cannot make that chain verify.  The need is
            # recorded in this transaction, so a lost connection or a crash only delays the fetch.
            self._groups.need_sync(group_id)
            self._group_work.append(lambda: self._sync(group_id))
            return None
        try:
            change = verify_membership_change(incoming.body, MembershipChange.deserialize(row.change))
        except E2EError as error:
            return self._refuse(group_id, sender, device, "membership change", error)
        self._adopt(group_id, [change])
        return None

    async def _sync(self, group_id: bytes) -> None:
        """Fetch the group's changes from the relay and adopt them once they verify from creation."""
        connection = await self._connection()
        try:
            chain = await connection.group_history(group_id)
        except transport.ConnectionLost:
            raise
        except transport.RelayError as error:
            # Not (or no longer) a member, or no such group: nothing to adopt, and the sender keys
            # held for it are refused.
            logger.info("%s: cannot fetch group %s: %s", self.name, group_id.hex(), error.code)
            with self._store.transaction():
                self._groups.synced(group_id)
                if self._groups.group(group_id) is None:
                    for seq, sender, device, _content in self._groups.pending_keys(group_id):
                        self._groups.release_key(seq)
                        self._group_after_commit.append(
                            self._refuse(
                                group_id,
                                sender,
                                device,
                                "sender key",
                                GroupError(f"for a group we are not in ({error.code})"),
                            )
                        )
                    for held in self._groups.pending(group_id):
                        self._groups.release(held.seq)
                        self._group_after_commit.append(
                            self._refuse(
                                group_id,
                                held.sender,
                                held.sender_device,
                                "group message",
                                GroupError(f"for a group we are not in ({error.code})"),
                            )
                        )
            self._group_committed()
            return
        except transport.TransportError as error:
            # A relay whose history does not end: refused and shown; the fetch is tried again later.
            with self._store.transaction():
                self._group_after_commit.append(self._refuse(group_id, "relay", 0, "membership chain", error))
            self._group_committed()
            return
        row = self._groups.group(group_id)
        with self._store.transaction():
            self._groups.synced(group_id)
            try:
                current: MembershipChange | None = None
                verified = []
                for data in chain:
                    current = verify_membership_change(data, current)
                    if current.group_id != group_id:
                        raise DecodeError("the chain is of another group")
                    verified.append(current)
                if not verified:
                    raise DecodeError("an empty chain")
                if row is not None:
                    # Our own verified history must be a prefix of the chain (else the relay forked it).
                    for change in verified[: row.epoch + 1]:
                        known = self._groups.change_at(group_id, change.epoch)
                        if known is not None and known != change.serialized:
                            raise MembershipError(
                                f"the relay's chain differs from ours at epoch {change.epoch}"
                            )
            except E2EError as error:
                self._group_after_commit.append(self._refuse(group_id, "relay", 0, "membership chain", error))
            else:
                new = [c for c in verified if row is None or c.epoch > row.epoch]
                if new and (row is not None or self.name in new[-1].names):
                    self._adopt(group_id, new)
        self._group_committed()

    def _on_group_message(self, group_id: bytes, incoming: _Incoming) -> object | None:
        sender, device = incoming.sender, incoming.sender_device
        row = self._groups.group(group_id)
        waiting = (row is None or not row.active) and self._groups.sync_needed(group_id)
        if (row is None or not row.active) and not waiting:
            return self._refuse(
                group_id, sender, device, "group message", GroupError("not a group we are in")
            )
        if row is not None and row.active:
            members = MembershipChange.deserialize(row.change)
            if members.member(sender) is None:
                return self._refuse(
                    group_id, sender, device, "group message", GroupError(f"{sender} is not a member")
                )
        name = SenderKeyName(sender, device, distribution_id(group_id))
        try:
            if waiting:
                # The change that adds us is still being fetched and verified: hold the message
                # (bounded, below) until the group and the sender's key are in place.
                raise NoSenderKeyError("the group is not verified yet")
            plaintext = self._group_cipher.decrypt(name, incoming.body)
        except NoSenderKeyError as error:
            try:
                chain_id = SenderKeyMessage.deserialize(incoming.body, SenderKeyFraming.LIBSIGNAL).chain_id
            except E2EError as bad:
                return self._refuse(group_id, sender, device, "group message", bad)
            if self._groups.count_pending(group_id, sender, device) >= MAX_PENDING_PER_SENDER:
                return self._refuse(group_id, sender, device, "group message", error)
            self._groups.hold(
                group_id,
                sender,
                device,
                incoming.client_id,
                incoming.relay_timestamp,
                chain_id,
                incoming.body,
                self._now_ms(),
            )
            if (
                not waiting
                and self._groups.retries_sent(group_id, sender, device, chain_id) < MAX_RETRY_REQUESTS
            ):
                self._groups.count_retry(group_id, sender, device, chain_id)
                body = encode_retry(group_id, chain_id)
                self._group_work.append(
                    lambda: self._send_control(sender, device, envelope.CONTENT_SENDER_KEY_RETRY, body)
                )
            return None
        except E2EError as error:
            return self._refuse(group_id, sender, device, "group message", error)
        return self._deliver(
            group_id, sender, device, incoming.client_id, incoming.relay_timestamp, plaintext
        )

    def _deliver(
        self,
        group_id: bytes,
        sender: str,
        device: int,
        client_id: str,
        relay_timestamp: int,
        plaintext: bytes,
    ) -> object:
        try:
            content = envelope.decode(plaintext)
            if content.content_type not in GROUP_CONTENT_TYPES:
                raise DecodeError("a group message carries text or an attachment pointer")
        except DecodeError as error:
            return self._refuse(group_id, sender, device, "group message", error)
        message_id = content.message_id.hex()
        self._groups.add_history(group_id, "in", sender, device, message_id, content.timestamp, content.body)
        return GroupMessage(
            group_id,
            sender,
            device,
            message_id,
            content.timestamp,
            relay_timestamp,
            content.body,
            content.content_type,
        )

    def _process_control(self, sender: str, device: int, content: envelope.Envelope) -> object | None:
        """A pairwise message of a group content type (inside the receive transaction)."""
        if content.content_type == envelope.CONTENT_SENDER_KEY:
            return self._on_sender_key(sender, device, content.body)
        if content.content_type == envelope.CONTENT_SENDER_KEY_RETRY:
            return self._on_retry(sender, device, content.body)
        return None

    def _on_sender_key(self, sender: str, device: int, body: bytes) -> object | None:
        try:
            group_id, title, data = decode_sender_key(body)
        except DecodeError as error:
            return self._refuse(b"", sender, device, "sender key", error)
        row = self._groups.group(group_id)
        if row is None:
            # It may have overtaken the change that adds us: keep it until the group verifies
            # (a bounded number per sender, so that nobody can fill the store with them).
            if self._groups.count_pending_keys(sender) >= MAX_PENDING_KEYS_PER_SENDER:
                return self._refuse(
                    group_id, sender, device, "sender key", GroupError("for an unknown group")
                )
            self._groups.hold_key(group_id, sender, device, body)
            self._groups.need_sync(group_id)
            self._group_work.append(lambda: self._sync(group_id))
            return None
        members = MembershipChange.deserialize(row.change)
        member = members.member(sender)
        account_key = self._primary_key(sender)
        try:
            if not row.active or member is None:
                raise GroupError(f"{sender} is not a member of the verified group")
            if sender == self.name and device == self.device_id:
                raise GroupError("a sender key in our own device's name")
            if account_key is None or account_key != member.identity_key:
                raise GroupError(f"{sender}'s session key is not the identity key the group lists")
            self._group_cipher.process_distribution_message(
                SenderKeyName(sender, device, distribution_id(group_id)), data
            )
        except (E2EError, GroupError) as error:
            return self._refuse(group_id, sender, device, "sender key", error)
        if row.title == group_id.hex()[:8] and title and members.signer_name() == sender:
            self._groups.set_title(group_id, title)
        # Held messages from this sender may decrypt now.
        for held in self._groups.pending(group_id, sender, device):
            name = SenderKeyName(sender, device, distribution_id(group_id))
            try:
                plaintext = self._group_cipher.decrypt(name, held.body)
            except NoSenderKeyError:
                continue
            except E2EError as error:
                self._groups.release(held.seq)
                self._group_after_commit.append(
                    self._refuse(group_id, sender, device, "group message", error)
                )
                continue
            self._groups.release(held.seq)
            self._group_after_commit.append(
                self._deliver(group_id, sender, device, held.client_id, held.relay_timestamp, plaintext)
            )
        return None

    def _on_retry(self, sender: str, device: int, body: bytes) -> object | None:
        try:
            group_id, chain_id = decode_retry(body)
        except DecodeError as error:
            return self._refuse(b"", sender, device, "retry request", error)
        row = self._groups.group(group_id)
        try:
            if row is None or not row.active:
                raise GroupError("not a group we are in")
            member = MembershipChange.deserialize(row.change).member(sender)
            if member is None:
                raise GroupError(f"{sender} is not a member")
            share = self._groups.share(group_id, sender, device)
            if share is not None and share.answers >= MAX_RETRY_ANSWERS:
                raise GroupError(f"{sender}/{device} asked {share.answers} times already")
        except GroupError as error:
            return self._refuse(group_id, sender, device, "retry request", error)
        if share is None:
            # We never gave it our chain: the ordinary distribution does.
            self._group_work.append(lambda: self._distribute(group_id))
            return None
        if share.chain_id != chain_id:
            logger.info("%s: %s/%d asked for a chain we no longer use", self.name, sender, device)
        self._groups.count_answer(group_id, sender, device)
        payload = encode_sender_key(group_id, row.title, share.distribution)
        self._group_work.append(
            lambda: self._send_control(sender, device, envelope.CONTENT_SENDER_KEY, payload)
        )
        return None

    # -- after a commit ------------------------------------------------------------------------------

    def _group_rolled_back(self) -> None:
        self._group_after_commit.clear()
        self._group_work.clear()

    def _group_committed(self) -> None:
        """Emit what the committed transaction reported and start the network work it scheduled."""
        events, self._group_after_commit = self._group_after_commit, []
        for event in events:
            self._events.put_nowait(event)
        work, self._group_work = self._group_work, []
        for job in work:
            task = asyncio.ensure_future(self._run_group_job(job))
            self._group_tasks.add(task)
            task.add_done_callback(self._group_tasks.discard)

    async def _run_group_job(self, job: Callable[[], Awaitable[None]]) -> None:
        # A job that lost its connection is tried again once the client has reconnected (it waits
        # for the connection); what it would have done is idempotent.
        for attempt in range(1, 6):
            try:
                async with self._group_lock:
                    await job()
                return
            except asyncio.CancelledError:
                raise
            except (transport.ConnectionLost, ClosedError) as error:
                logger.info("%s: group work interrupted (%s), attempt %d", self.name, error, attempt)
                await asyncio.sleep(0.2 * attempt)
            except Exception:
                logger.exception("%s: group work failed", self.name)
                return

    # -- sending -------------------------------------------------------------------------------------

    async def _send_control(self, name: str, device_id: int, content_type: int, body: bytes) -> None:
        """A pairwise message of a group content type, through the outbox like any message."""
        await self._send_pairwise(name, device_id, content_type, body, lambda: None)

    async def _send_pairwise(
        self, name: str, device_id: int, content_type: int, body: bytes, also: Callable[[], None]
    ) -> None:
        async with self._lock((name, device_id)):
            self._check_identity_unchanged(name, device_id)
            peer = ProtocolAddress(name, device_id)
            cipher = self._cipher(peer)
            bundle = None if cipher.has_session() else await self._fetch_bundle(name, device_id)
            self._check_identity_unchanged(name, device_id)
            message_id = self._rng(envelope.MESSAGE_ID_LENGTH)
            timestamp = self._now_ms()
            plaintext = envelope.encode(envelope.Envelope(message_id, timestamp, body, content_type))
            try:
                with self._committing(name):
                    if bundle is not None:
                        self._start_session(peer, cipher, bundle)
                    also()
                    ciphertext = cipher.encrypt(plaintext, self._rng)
                    self._store.add_outbox(
                        name, device_id, message_id.hex(), int(ciphertext.type), ciphertext.body, timestamp
                    )
            except UntrustedIdentityError as error:
                raise self._untrusted(name, device_id, error) from error
        self._outbox_empty.clear()
        self._outbox_changed.set()

    async def _distribute(self, group_id: bytes) -> None:
        """Hand our current chain to every member device of the verified group that lacks it."""
        row = self._groups.group(group_id)
        if row is None or not row.active:
            return
        members = MembershipChange.deserialize(row.change)
        our_name = self._our_name(group_id)
        # Our chain as it is now (computed once: parsing the record checks the signing key pair).
        # Should a removal rotate it while this loop awaits the network, the members still to go
        # get this chain now and the new one before our next message, as the shares say.
        with self._store.transaction():
            distribution: SenderKeyDistributionMessage = self._group_cipher.create_distribution_message(
                our_name, self._rng
            )
        for member in members.members:
            if self._device_book.seen(member.name) is None and member.name not in self._device_lists_fetched:
                self._device_lists_fetched.add(member.name)
                # A member whose device list this device never verified (a companion that has not
                # written to it yet): fetch it once, so that its other devices get our chain too.
                # A list that does not verify leaves the devices we know; the key checks below
                # still hold.
                try:
                    await self.refresh_devices(member.name)
                except (transport.RelayError, E2EError, IdentityChanged) as error:
                    logger.info("%s: no device list for %s: %s", self.name, member.name, error)
        for member in members.members:
            # Linked devices: every device on the member's verified device list too (client/fanout.py),
            # and our own other devices, so that each of them shows the whole group conversation.
            if member.name == self.name:
                devices = set(self.known_devices(self.name)) - {self.device_id}
            else:
                devices = {1, *self._store.session_devices(member.name), *self.known_devices(member.name)}
            for device in sorted(devices):
                share = self._groups.share(group_id, member.name, device)
                if share is not None and share.chain_id == distribution.chain_id:
                    continue
                account_key = self._primary_key(member.name)
                if account_key is not None and account_key != member.identity_key:
                    # The group lists another key than our session with this name: a ghost or a
                    # changed identity.  Our sender key does not go there.
                    with self._store.transaction():
                        self._events.put_nowait(
                            self._refuse(
                                group_id,
                                member.name,
                                device,
                                "member",
                                GroupError("the signed identity key is not the one our session has"),
                            )
                        )
                    continue
                data = distribution.serialize()

                def record(
                    name: str = member.name,
                    key: PublicKey = member.identity_key,
                    dev: int = device,
                    chain: int = distribution.chain_id,
                    data: bytes = data,
                ) -> None:
                    # A session started just now from a bundle must be bound to the signed key too
                    # (for our own devices: our account's primary key, through our device list).
                    bound = self._primary_key(name)
                    if bound is None or bound != key:
                        raise GroupError(f"{name}'s bundle is not signed by the identity key the group lists")
                    self._groups.put_share(group_id, name, dev, chain, data)

                try:
                    await self._send_pairwise(
                        member.name,
                        device,
                        envelope.CONTENT_SENDER_KEY,
                        encode_sender_key(group_id, row.title, data),
                        record,
                    )
                except transport.RelayError as error:
                    logger.info("%s: cannot reach %s/%d: %s", self.name, member.name, device, error.code)
                except (GroupError, IdentityChanged) as error:
                    with self._store.transaction():
                        self._events.put_nowait(self._refuse(group_id, member.name, device, "member", error))

    async def send_group(
        self, group_id: bytes, body: bytes | str, *, content_type: int = envelope.CONTENT_TEXT
    ) -> str:
        """Encrypt ``body`` once for the group and queue it; returns its message id.

        Our sender key first goes to every member device that lacks it (over the pairwise
        sessions), then the message is committed to the group outbox with the advanced chain and
        sent with one ``group_send``; the relay queues it for every member device.
        ``content_type`` is text, or an attachment pointer (:meth:`send_file_to_group`); the
        group-management content types travel pairwise only.
        """
        self._check_running()
        if content_type not in GROUP_CONTENT_TYPES:
            raise GroupError(f"content type {content_type} is not sent to a group")
        if isinstance(body, str):
            body = body.encode("utf-8")
        async with self._group_lock:
            row = self._groups.group(group_id)
            if row is None or not row.active:
                raise GroupError("not a group we are in")
            await self._distribute(group_id)
            message_id = self._rng(envelope.MESSAGE_ID_LENGTH)
            timestamp = self._now_ms()
            plaintext = envelope.encode(envelope.Envelope(message_id, timestamp, body, content_type))
            client_id = message_id.hex()
            with self._store.transaction():
                ciphertext = self._group_cipher.encrypt(self._our_name(group_id), plaintext, self._rng)
                self._groups.add_outbox(group_id, client_id, SENDER_KEY_MESSAGE_TYPE, ciphertext)
                self._groups.add_history(
                    group_id, "out", self.name, self.device_id, client_id, timestamp, body
                )
        self._group_outbox_changed.set()
        return client_id

    async def flush_groups(self, timeout: float | None = None) -> None:
        """Wait until the relay acknowledged every group message we queued."""

        async def drained() -> None:
            while self._groups.outbox():
                self._group_outbox_changed.set()
                await asyncio.sleep(0.02)

        await asyncio.wait_for(drained(), timeout)

    async def _group_pump(self, connection: transport.Connection) -> None:
        """Send the group outbox in order; an entry leaves once the relay committed it for everyone."""
        for group_id in self._groups.syncs():
            self._group_work.append(functools.partial(self._sync, group_id))
        self._group_committed()
        while True:
            self._group_outbox_changed.clear()
            entries = self._groups.outbox()
            if entries and self._store.outbox_size():
                # The distribution messages a group message needs leave first (a member that gets
                # the group message first holds it until they arrive, so this only saves a retry).
                with contextlib.suppress(TimeoutError):
                    await self.flush(timeout=5)  # type: ignore[attr-defined]
            for seq, group_id, client_id, message_type, body in entries:
                try:
                    await connection.group_send(group_id, client_id, message_type, body)
                except transport.RelayError as error:
                    if error.code in ("rate_limited", "queue_full", "internal_error"):
                        await asyncio.sleep(min(float(error.details.get("retry_after", 1.0)), 5.0))
                        self._group_outbox_changed.set()
                        break
                    logger.warning(
                        "%s: the relay refused group message %s: %s", self.name, client_id, error.code
                    )
                    with self._store.transaction():
                        self._events.put_nowait(
                            self._refuse(group_id, self.name, self.device_id, "our message", error)
                        )
                self._groups.remove_outbox(seq)
            await self._group_outbox_changed.wait()


def _signer_of(
    changes: list[MembershipChange], before: set[str], groups: GroupStore, group_id: bytes
) -> str | None:
    """The name of the member who signed the last change, looked up in the list before it."""
    last = changes[-1]
    if len(changes) > 1:
        previous: MembershipChange | None = changes[-2]
    else:
        data = groups.change_at(group_id, last.epoch - 1) if last.epoch else None
        previous = None if data is None else MembershipChange.deserialize(data)
    if previous is None:
        return None
    for member in previous.members:
        if member.identity_key == last.signer:
            return member.name
    return None
