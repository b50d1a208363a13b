"""Signed group membership: who is in a group, changed only by an admin's identity key, in a hash chain.

What this module owns
---------------------
A group's membership as a sequence of :class:`MembershipChange` values, each one the *whole* member
list of the group at one ``epoch``, signed by the identity key of the member who made the change
(``docs/groups.md``, "Membership the relay cannot forge").  The relay stores and fans out these
changes, but it holds no member's identity private key, so it cannot make one; every client
verifies each change against the one before it before it acts on it (before it hands its sender
key to a new member, above all).

The encoding (version 1), integers big-endian::

    0x01 ‖ group_id (16) ‖ epoch (u64) ‖ previous_hash (32) ‖ signer identity key (33)
         ‖ member count (u16) ‖ { name length (u8) ‖ name (UTF-8) ‖ identity key (33) ‖ flags (u8) }*
         ‖ signature (64)

``flags`` bit 0 marks an admin; no other bit may be set.  Members are listed in strictly increasing
order of their names' bytes, so one member list has exactly one encoding.  The signature is XEdDSA
by the signer's identity key over :data:`SIGNATURE_LABEL` ‖ every byte before the signature.
``previous_hash`` is the :attr:`MembershipChange.digest` (SHA-256 of the whole encoding, signature
included) of the change at ``epoch - 1``, and 32 zero bytes at epoch 0.

Verification rules (:func:`verify_membership_change`)
-----------------------------------------------------
* The signature verifies under the signer key the change names (else :class:`MembershipSignatureError`).
* Epoch 0 (the group's creation): the previous hash is zero, and the signer is an admin member
  of the new list (:class:`NotAnAdminError`).
* A later epoch: same group id (:class:`MembershipChainError`), ``epoch`` is exactly the previous
  epoch plus one (:class:`MembershipOrderError`: a replayed or reordered change), ``previous_hash``
  is the previous change's digest (:class:`MembershipChainError`: a fork), and the signer is a
  member of the *previous* list under the identity key listed there.  An admin may make any change;
  any other member may only leave: the new list is the previous one without the signer
  (:class:`NotAnAdminError` otherwise).

Invariants
----------
Everything that decodes re-encodes to the same bytes.  Verification raises, it never returns a
bool, and it never changes anything: a caller adopts the returned change only after it returned.

What this module does not know
------------------------------
Where changes are stored, how they travel, or whether a member's identity key is the one the
caller trusts for that name: the caller compares :attr:`GroupMember.identity_key` with the key of
its pairwise session before it shares a sender key.  It draws no randomness of its own (signing
takes ``rng``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from e2e.errors import DecodeError, E2EError, InvalidSignatureError
from e2e.keys import SIGNATURE_LENGTH, KeyPair, PublicKey, Rng

__all__ = [
    "MEMBERSHIP_VERSION",
    "GROUP_ID_LENGTH",
    "MAX_MEMBERS",
    "MAX_MEMBER_NAME_LENGTH",
    "SIGNATURE_LABEL",
    "MembershipError",
    "MembershipSignatureError",
    "MembershipOrderError",
    "MembershipChainError",
    "NotAnAdminError",
    "GroupMember",
    "MembershipChange",
    "create_membership",
    "next_membership",
    "verify_membership_change",
    "verify_membership_chain",
]

MEMBERSHIP_VERSION: Final = 1
GROUP_ID_LENGTH: Final = 16
MAX_MEMBERS: Final = 65535
"""What the u16 count can say; a relay sets its own, smaller cap."""
MAX_MEMBER_NAME_LENGTH: Final = 64
SIGNATURE_LABEL: Final = b"e2e-relay group membership v1\x00"

_KEY_LENGTH = 33
_HASH_LENGTH = 32
_HEADER_LENGTH = 1 + GROUP_ID_LENGTH + 8 + _HASH_LENGTH + _KEY_LENGTH + 2
_ZERO_HASH = bytes(_HASH_LENGTH)
_ADMIN = 0x01


class MembershipError(E2EError):
    """A membership change that must not be adopted."""


class MembershipSignatureError(MembershipError, InvalidSignatureError):
    """The change's signature does not verify under the signer key it names."""


class MembershipOrderError(MembershipError):
    """The change's epoch is not the next one: a replay (old epoch) or a reorder (a gap)."""

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class MembershipChainError(MembershipError):
    """The change does not follow the previous one: another group, or another previous hash (a fork)."""


class NotAnAdminError(MembershipError):
    """The signer was not allowed to make this change (not a member, or not an admin and not leaving)."""


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One member: the account name, the identity key it is bound to, and whether it is an admin."""

    name: str
    identity_key: PublicKey
    admin: bool = False

    def __post_init__(self) -> None:
        encoded = self.name.encode("utf-8") if isinstance(self.name, str) else b""
        if not 0 < len(encoded) <= MAX_MEMBER_NAME_LENGTH:
            raise ValueError(f"a member name is 1 to {MAX_MEMBER_NAME_LENGTH} bytes of UTF-8")
        if not isinstance(self.identity_key, PublicKey):
            raise TypeError("a member's identity key is a PublicKey")


def _check_members(members: Sequence[GroupMember]) -> tuple[GroupMember, ...]:
    ordered = tuple(sorted(members, key=lambda m: m.name.encode("utf-8")))
    names = [m.name for m in ordered]
    if len(set(names)) != len(names):
        raise ValueError("a member is listed twice")
    if len(ordered) > MAX_MEMBERS:
        raise ValueError(f"at most {MAX_MEMBERS} members")
    return ordered


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One signed member list of one group at one epoch; :attr:`serialized` is what travels."""

    group_id: bytes
    epoch: int
    previous_hash: bytes
    signer: PublicKey
    members: tuple[GroupMember, ...]
    signature: bytes

    @property
    def signed_part(self) -> bytes:
        """Every byte of the encoding before the signature."""
        parts = [
            bytes((MEMBERSHIP_VERSION,)),
            self.group_id,
            self.epoch.to_bytes(8, "big"),
            self.previous_hash,
            self.signer.serialize(),
            len(self.members).to_bytes(2, "big"),
        ]
        for member in self.members:
            name = member.name.encode("utf-8")
            parts += [
                bytes((len(name),)),
                name,
                member.identity_key.serialize(),
                bytes((_ADMIN if member.admin else 0,)),
            ]
        return b"".join(parts)

    @property
    def serialized(self) -> bytes:
        return self.signed_part + self.signature

    @property
    def digest(self) -> bytes:
        """SHA-256 of :attr:`serialized`: what the next change names as its ``previous_hash``."""
        return hashlib.sha256(self.serialized).digest()

    def member(self, name: str) -> GroupMember | None:
        """The member called ``name``, or None."""
        for member in self.members:
            if member.name == name:
                return member
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def signer_name(self) -> str | None:
        """The member whose identity key signed this change (None if the signer is not listed)."""
        for member in self.members:
            if member.identity_key == self.signer:
                return member.name
        return None

    @classmethod
    def deserialize(cls, data: bytes) -> MembershipChange:
        """Parse (without checking the signature or the chain); :class:`DecodeError` if malformed."""
        if not isinstance(data, bytes):
            raise DecodeError("a membership change is bytes")
        if len(data) < _HEADER_LENGTH + SIGNATURE_LENGTH:
            raise DecodeError("a membership change is truncated")
        if data[0] != MEMBERSHIP_VERSION:
            raise DecodeError(f"unknown membership change version {data[0]}")
        at = 1
        group_id = data[at : at + GROUP_ID_LENGTH]
        at += GROUP_ID_LENGTH
        epoch = int.from_bytes(data[at : at + 8], "big")
        at += 8
        previous_hash = data[at : at + _HASH_LENGTH]
        at += _HASH_LENGTH
        signer = PublicKey.deserialize(data[at : at + _KEY_LENGTH])
        at += _KEY_LENGTH
        count = int.from_bytes(data[at : at + 2], "big")
        at += 2
        body_end = len(data) - SIGNATURE_LENGTH
        members = []
        previous_name = b""
        for _ in range(count):
            if at >= body_end:
                raise DecodeError("a membership change is truncated")
            length = data[at]
            at += 1
            if not 0 < length <= MAX_MEMBER_NAME_LENGTH or at + length + _KEY_LENGTH + 1 > body_end:
                raise DecodeError("a member entry is malformed or truncated")
            raw_name = data[at : at + length]
            at += length
            if raw_name <= previous_name:
                raise DecodeError("members are not in strictly increasing order")
            previous_name = raw_name
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("a member name is not UTF-8") from None
            key = PublicKey.deserialize(data[at : at + _KEY_LENGTH])
            at += _KEY_LENGTH
            flags = data[at]
            at += 1
            if flags & ~_ADMIN:
                raise DecodeError(f"unknown member flags 0x{flags:02x}")
            members.append(GroupMember(name, key, bool(flags & _ADMIN)))
        if at != body_end:
            raise DecodeError("trailing bytes after the member list")
        change = cls(group_id, epoch, previous_hash, signer, tuple(members), data[body_end:])
        # The encoding is canonical: what decodes re-encodes to the same bytes.
        assert change.serialized == data
        return change

    def verify_signature(self) -> None:
        """Raise :class:`MembershipSignatureError` unless the signer key signed this change."""
        try:
            self.signer.verify(SIGNATURE_LABEL + self.signed_part, self.signature)
        except InvalidSignatureError:
            raise MembershipSignatureError("the membership change's signature does not verify") from None

    def __repr__(self) -> str:
        return (
            f"MembershipChange(group={self.group_id.hex()}, epoch={self.epoch}, "
            f"members={list(self.names)}, signer={self.signer.fingerprint()})"
        )


def _sign(
    group_id: bytes,
    epoch: int,
    previous_hash: bytes,
    members: Iterable[GroupMember],
    our_identity: KeyPair,
    rng: Rng,
) -> MembershipChange:
    unsigned = MembershipChange(
        group_id, epoch, previous_hash, our_identity.public_key, _check_members(list(members)), b""
    )
    signature = our_identity.sign(SIGNATURE_LABEL + unsigned.signed_part, rng)
    return MembershipChange(
        group_id, epoch, previous_hash, our_identity.public_key, unsigned.members, signature
    )


def create_membership(
    group_id: bytes, members: Iterable[GroupMember], our_identity: KeyPair, rng: Rng
) -> MembershipChange:
    """A new group's first change (epoch 0), signed by ``our_identity``, which must be an admin in it."""
    if not isinstance(group_id, bytes) or len(group_id) != GROUP_ID_LENGTH:
        raise ValueError(f"a group id is {GROUP_ID_LENGTH} bytes")
    change = _sign(group_id, 0, _ZERO_HASH, members, our_identity, rng)
    verify_membership_change(change.serialized, None)
    return change


def next_membership(
    previous: MembershipChange, members: Iterable[GroupMember], our_identity: KeyPair, rng: Rng
) -> MembershipChange:
    """The change after ``previous`` with the member list ``members``, signed by ``our_identity``.

    Raises :class:`NotAnAdminError` when our key may not make this change (checked as a verifier would).
    """
    change = _sign(previous.group_id, previous.epoch + 1, previous.digest, members, our_identity, rng)
    verify_membership_change(change.serialized, previous)
    return change


def verify_membership_change(data: bytes, previous: MembershipChange | None) -> MembershipChange:
    """Decode ``data`` and check it follows ``previous`` (None: it must create the group).

    Raises :class:`DecodeError` or a :class:`MembershipError` subclass (see the module docstring).
    """
    change = MembershipChange.deserialize(data)
    change.verify_signature()
    if previous is None:
        if change.epoch != 0:
            raise MembershipOrderError(
                f"a group's first change has epoch 0, not {change.epoch}", expected=0, got=change.epoch
            )
        if change.previous_hash != _ZERO_HASH:
            raise MembershipChainError("a group's first change names no previous change")
        signer = next((m for m in change.members if m.identity_key == change.signer), None)
        if signer is None or not signer.admin:
            raise NotAnAdminError("a group is created by one of its admins")
        return change
    if change.group_id != previous.group_id:
        raise MembershipChainError("the change is for another group")
    if change.epoch != previous.epoch + 1:
        kind = "replayed" if change.epoch <= previous.epoch else "out of order"
        raise MembershipOrderError(
            f"membership change for epoch {change.epoch} after epoch {previous.epoch} ({kind})",
            expected=previous.epoch + 1,
            got=change.epoch,
        )
    if change.previous_hash != previous.digest:
        raise MembershipChainError("the change does not follow the previous one (a fork of the chain)")
    signer = next((m for m in previous.members if m.identity_key == change.signer), None)
    if signer is None:
        raise NotAnAdminError("the change is signed by a key that is not a member's")
    if not signer.admin:
        leaving = tuple(m for m in previous.members if m.name != signer.name)
        if change.members != leaving:
            raise NotAnAdminError(f"{signer.name} is not an admin: it may only leave the group")
    return change


def verify_membership_chain(changes: Sequence[bytes]) -> MembershipChange:
    """Verify a whole chain from the group's creation; return its last change."""
    if not changes:
        raise MembershipChainError("an empty membership chain")
    current = verify_membership_change(changes[0], None)
    for data in changes[1:]:
        current = verify_membership_change(data, current)
    return current
