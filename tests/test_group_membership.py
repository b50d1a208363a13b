"""Signed group membership (e2e.group_membership): vectors, an independent signature check, properties
and every refusal (replay, reorder, fork, non-admin, bad signature, malformed bytes)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import axolotl_curve25519
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError, InvalidSignatureError
from e2e.group_membership import (
    SIGNATURE_LABEL,
    GroupMember,
    MembershipChainError,
    MembershipChange,
    MembershipOrderError,
    MembershipSignatureError,
    NotAnAdminError,
    create_membership,
    next_membership,
    verify_membership_chain,
    verify_membership_change,
)
from e2e.keys import KeyPair

VECTORS = json.loads((Path(__file__).parent / "vectors" / "group_membership.json").read_text())


def people(*names: str) -> dict[str, KeyPair]:
    return {name: KeyPair.generate(os.urandom) for name in names}


def members(keys: dict[str, KeyPair], admins: set[str]) -> list[GroupMember]:
    return [GroupMember(name, key.public_key, name in admins) for name, key in keys.items()]


@pytest.fixture
def group():
    keys = people("alice", "bob", "carol")
    c0 = create_membership(os.urandom(16), members(keys, {"alice"}), keys["alice"], os.urandom)
    return keys, c0


def test_vectors_verify_with_an_independent_xeddsa_and_hash_chain() -> None:
    for case in VECTORS["cases"]:
        previous_digest = bytes(32)
        for output in case["expected"]["changes"]:
            data = bytes.fromhex(output["change"])
            change = MembershipChange.deserialize(data)
            # libsignal's C XEdDSA verifier (python-axolotl-curve25519) accepts every signature.
            assert (
                axolotl_curve25519.verifySignature(
                    change.signer.raw, SIGNATURE_LABEL + data[:-64], data[-64:]
                )
                == 0
            ), case["name"]
            assert change.previous_hash == previous_digest
            assert hashlib.sha256(data).hexdigest() == output["digest"]
            previous_digest = bytes.fromhex(output["digest"])
        chain = [bytes.fromhex(o["change"]) for o in case["expected"]["changes"]]
        assert verify_membership_chain(chain).epoch == len(chain) - 1


def test_the_vector_chain_holds_an_add_a_removal_and_a_leave() -> None:
    (case,) = [c for c in VECTORS["cases"] if c["name"] == "create-add-remove-leave"]
    names = [
        MembershipChange.deserialize(bytes.fromhex(o["change"])).names for o in case["expected"]["changes"]
    ]
    assert names == [
        ("alice", "bob"),
        ("alice", "bob", "carol", "dave"),
        ("alice", "bob", "dave"),
        ("alice", "dave"),
    ]


def test_adds_removals_and_leaving(group) -> None:
    keys, c0 = group
    dave = KeyPair.generate(os.urandom)
    c1 = next_membership(c0, [*c0.members, GroupMember("dave", dave.public_key)], keys["alice"], os.urandom)
    c2 = next_membership(c1, [m for m in c1.members if m.name != "carol"], keys["alice"], os.urandom)
    c3 = next_membership(c2, [m for m in c2.members if m.name != "bob"], keys["bob"], os.urandom)
    assert verify_membership_chain([c.serialized for c in (c0, c1, c2, c3)]).names == ("alice", "dave")
    assert c3.signer_name() is None and c1.signer_name() == "alice"


def test_replays_reorders_and_forks_are_refused(group) -> None:
    keys, c0 = group
    c1 = next_membership(c0, c0.members[:2], keys["alice"], os.urandom)
    c2 = next_membership(c1, c1.members[:1], keys["alice"], os.urandom)
    with pytest.raises(MembershipOrderError) as replay:
        verify_membership_change(c1.serialized, c1)
    assert (replay.value.expected, replay.value.got) == (2, 1)
    with pytest.raises(MembershipOrderError):
        verify_membership_change(c2.serialized, c0)  # a reorder: epoch 2 straight after 0
    with pytest.raises(MembershipOrderError):
        verify_membership_change(c0.serialized, c1)
    fork = next_membership(c0, c0.members, keys["alice"], os.urandom)
    with pytest.raises(MembershipChainError):
        verify_membership_change(c2.serialized, fork)  # follows c1, not the fork
    other = create_membership(os.urandom(16), c0.members, keys["alice"], os.urandom)
    with pytest.raises(MembershipChainError):
        verify_membership_change(
            next_membership(other, other.members[:1], keys["alice"], os.urandom).serialized, c0
        )
    with pytest.raises(MembershipOrderError):
        verify_membership_change(c1.serialized, None)  # not a creation


def _signed(previous: MembershipChange, members: list[GroupMember], signer: KeyPair) -> bytes:
    unsigned = MembershipChange(
        previous.group_id, previous.epoch + 1, previous.digest, signer.public_key, tuple(members), b""
    )
    signature = signer.sign(SIGNATURE_LABEL + unsigned.signed_part, os.urandom)
    return unsigned.signed_part + signature


def test_only_admins_change_others_and_anyone_may_leave(group) -> None:
    keys, c0 = group
    mallory = KeyPair.generate(os.urandom)
    ghost = [*c0.members, GroupMember("mallory", mallory.public_key)]
    with pytest.raises(NotAnAdminError):
        verify_membership_change(_signed(c0, ghost, keys["bob"]), c0)
    with pytest.raises(NotAnAdminError):
        verify_membership_change(_signed(c0, ghost, mallory), c0)  # not even a member
    with pytest.raises(NotAnAdminError):
        next_membership(c0, [m for m in c0.members if m.name != "carol"], keys["bob"], os.urandom)
    # Bob may remove himself, and only himself, and may not promote himself while leaving.
    verify_membership_change(_signed(c0, [m for m in c0.members if m.name != "bob"], keys["bob"]), c0)
    promoted = [GroupMember(m.name, m.identity_key, True) for m in c0.members]
    with pytest.raises(NotAnAdminError):
        verify_membership_change(_signed(c0, promoted, keys["bob"]), c0)
    # A creation must be signed by one of its admins.
    with pytest.raises(NotAnAdminError):
        create_membership(os.urandom(16), c0.members, keys["bob"], os.urandom)


def test_a_bad_or_missing_signature_is_refused(group) -> None:
    keys, c0 = group
    good = next_membership(c0, c0.members[:2], keys["alice"], os.urandom).serialized
    for i in (1, 30, len(good) - 70, len(good) - 1):
        tampered = good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1 :]
        with pytest.raises(
            (MembershipSignatureError, MembershipChainError, MembershipOrderError, DecodeError)
        ):
            verify_membership_change(tampered, c0)
    with pytest.raises(MembershipSignatureError) as caught:
        verify_membership_change(good[:-64] + bytes(64), c0)
    assert isinstance(caught.value, InvalidSignatureError)
    with pytest.raises(DecodeError):
        verify_membership_change(good[:-64], c0)  # no signature at all


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:10],
        lambda d: b"\x02" + d[1:],
        lambda d: d + b"\x00",
        lambda d: d[:90] + b"\xff\xff" + d[92:],  # a member count beyond the bytes
        lambda d: b"",
    ],
)
def test_malformed_changes_are_decode_errors(group, mutate) -> None:
    _keys, c0 = group
    with pytest.raises(DecodeError):
        MembershipChange.deserialize(mutate(c0.serialized))


def test_members_are_canonical() -> None:
    keys = people("bob", "alice")
    with pytest.raises(ValueError):
        GroupMember("", keys["bob"].public_key)
    with pytest.raises(ValueError):
        GroupMember("x" * 65, keys["bob"].public_key)
    with pytest.raises(ValueError):
        create_membership(
            os.urandom(16),
            [*members(keys, {"alice"}), GroupMember("bob", keys["bob"].public_key)],
            keys["alice"],
            os.urandom,
        )
    change = create_membership(os.urandom(16), members(keys, {"alice"}), keys["alice"], os.urandom)
    assert change.names == ("alice", "bob")
    # Out-of-order names do not decode, so one member list has one encoding.
    swapped = MembershipChange(
        change.group_id, 0, bytes(32), change.signer, change.members[::-1], change.signature
    )
    with pytest.raises(DecodeError):
        MembershipChange.deserialize(swapped.serialized)
    assert "alice" in repr(change) and change.signature.hex() not in repr(change)


@settings(max_examples=25, deadline=None)
@given(
    names=st.sets(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789é", min_size=1, max_size=12),
        min_size=1,
        max_size=8,
    ),
    flip=st.integers(min_value=0),
)
def test_round_trip_and_every_flipped_byte_is_refused(names, flip) -> None:
    keys = {name: KeyPair.generate(os.urandom) for name in names}
    admin = sorted(names)[0]
    change = create_membership(os.urandom(16), members(keys, {admin}), keys[admin], os.urandom)
    data = change.serialized
    assert MembershipChange.deserialize(data) == change
    assert verify_membership_change(data, None) == change
    i = flip % len(data)
    tampered = data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1 :]
    with pytest.raises(
        (DecodeError, MembershipSignatureError, MembershipChainError, MembershipOrderError, NotAnAdminError)
    ):
        verify_membership_change(tampered, None)


_CHAIN_KEYS = {name: KeyPair.generate(os.urandom) for name in ("alice", "bob", "carol", "dave", "mallory")}


def _chain(length: int) -> list[MembershipChange]:
    keys = _CHAIN_KEYS
    everyone = [GroupMember(n, keys[n].public_key, n == "alice") for n in ("alice", "bob", "carol", "dave")]
    chain = [create_membership(bytes(16), everyone[:2], keys["alice"], os.urandom)]
    while len(chain) < length:
        previous = chain[-1]
        names = set(previous.names)
        # Alternately add the next person and remove the last non-admin.
        if len(names) < 4:
            members = [m for m in everyone if m.name in names or m.name == everyone[len(names)].name]
        else:
            members = [m for m in previous.members if m.name != "dave"]
        chain.append(next_membership(previous, members, keys["alice"], os.urandom))
    return chain


_LONG_CHAIN = _chain(6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=25))
def test_a_verifier_fed_a_lossy_reordering_duplicating_network_adopts_only_the_chain(deliveries) -> None:
    """Changes (and a forged one, index 6) arrive in any order, repeated or not at all: the verifier
    adopts exactly the next epoch each time, refuses everything else with a typed error, and a
    fetch of the whole chain afterwards brings it to the end."""
    keys = _CHAIN_KEYS
    forged = _signed(
        _LONG_CHAIN[2],
        [*_LONG_CHAIN[2].members, GroupMember("mallory", keys["mallory"].public_key)],
        keys["mallory"],
    )
    current = None
    adopted: list[int] = []
    for index in deliveries:
        data = forged if index == 6 else _LONG_CHAIN[index].serialized
        try:
            current = verify_membership_change(data, current)
        except (MembershipOrderError, MembershipChainError, NotAnAdminError, MembershipSignatureError):
            continue
        adopted.append(current.epoch)
        assert data != forged
    assert adopted == list(range(len(adopted)))
    if current is not None:
        assert current == _LONG_CHAIN[adopted[-1]]
    for change in _LONG_CHAIN[len(adopted) :]:
        current = verify_membership_change(change.serialized, current)
    assert current == _LONG_CHAIN[-1]
