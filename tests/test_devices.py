"""Linked devices in the core (e2e.devices, e2e.linking): the signed bytes rebuilt by hand, every
encoding round-trips and refuses malformed input with a typed error, tampering and swaps are caught,
and the rollback check refuses older or equivocating lists."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.devices import (
    DeviceIdentity,
    DeviceList,
    DeviceListError,
    DeviceListRollbackError,
    LinkingMetadata,
    SignedDeviceList,
    accept_device_list,
    sign_account,
    sign_device,
    sign_device_list,
    verify_account_signature,
    verify_device_list,
    verify_device_signature,
)
from e2e.errors import DecodeError, E2EError, InvalidKeyError, InvalidSignatureError
from e2e.keys import PrivateKey, PublicKey
from e2e.linking import (
    LinkCodeError,
    LinkingPayload,
    LinkingTamperedError,
    LinkOffer,
    open_linking_payload,
    seal_linking_payload,
)
from e2e.vectors import SeededRng, check_cases

VECTORS = Path(__file__).parent / "vectors" / "device_linking.json"


def _parties(seed: bytes = b"devices") -> tuple[SeededRng, PrivateKey, PrivateKey]:
    rng = SeededRng(seed)
    return rng, PrivateKey.generate(rng), PrivateKey.generate(rng)


def _link(
    rng: SeededRng, primary: PrivateKey, companion: PrivateKey, device_id: int = 2
) -> tuple[LinkOffer, LinkingPayload]:
    offer = LinkOffer.generate(companion.public_key(), rng)
    metadata = LinkingMetadata("alice", device_id, 1_800_000_000)
    signature = sign_account(primary, metadata, offer.identity_key, rng)
    device_list = DeviceList.of(
        "alice", 2, 1_800_000_000, [(1, primary.public_key()), (device_id, offer.identity_key)]
    )
    payload = LinkingPayload(
        metadata, primary.public_key(), signature, sign_device_list(primary, device_list, rng)
    )
    return offer, payload


def test_the_vector_file_checks() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    count, mismatches = check_cases(document)
    assert count == 9 and mismatches == []


def test_the_vectors_signatures_cover_the_bytes_the_overview_names() -> None:
    """Rebuild each signed message from the vector's own fields and verify it independently."""
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    links = [case for case in document["cases"] if case["name"].startswith("link-")]
    assert len(links) == 2
    for case in links:
        out = case["expected"]
        primary = PublicKey.deserialize(bytes.fromhex(out["primary_identity_public"]))
        companion = PublicKey.deserialize(bytes.fromhex(out["companion_identity_public"]))
        metadata = bytes.fromhex(out["linking_metadata"])
        account = case["inputs"]["account"].encode()
        assert metadata == b"\x01" + struct.pack(">H", len(account)) + account + struct.pack(
            ">IQ", case["inputs"]["device_id"], case["inputs"]["linked_at"]
        )
        primary.verify(
            b"\x06\x00" + metadata + companion.serialize(), bytes.fromhex(out["account_signature"])
        )
        companion.verify(
            b"\x06\x01" + metadata + companion.serialize() + primary.serialize(),
            bytes.fromhex(out["device_signature"]),
        )
        signed = bytes.fromhex(out["signed_device_list"])
        device_list = bytes.fromhex(out["device_list"])
        assert signed[:5] == b"\x01" + struct.pack(">I", len(device_list)) and signed[5:-64] == device_list
        primary.verify(b"\x06\x02" + device_list, signed[-64:])
        # The account signature must not pass as a device-list signature or the reverse.
        with pytest.raises(InvalidSignatureError):
            primary.verify(
                b"\x06\x02" + metadata + companion.serialize(), bytes.fromhex(out["account_signature"])
            )


def test_link_round_trip_and_device_identity() -> None:
    rng, primary, companion = _parties()
    offer, payload = _link(rng, primary, companion)
    opened = open_linking_payload(offer, seal_linking_payload(offer, payload, rng))
    assert opened.device_list.device_ids == (1, 2)
    identity = opened.device_identity(companion, rng)
    identity.verify(primary.public_key())
    assert DeviceIdentity.decode(identity.encode()) == identity
    assert LinkOffer.from_code(offer.to_code()) == offer
    assert LinkOffer.from_code("  " + offer.to_code().lower() + "\n") == offer


def test_every_flipped_bit_of_a_sealed_payload_is_refused() -> None:
    rng, primary, companion = _parties(b"flip")
    offer, payload = _link(rng, primary, companion)
    sealed = seal_linking_payload(offer, payload, rng)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x04
        with pytest.raises(LinkingTamperedError):
            open_linking_payload(offer, bytes(altered))
    with pytest.raises(LinkingTamperedError):
        open_linking_payload(offer, sealed[:-1])


def test_a_payload_sealed_for_another_companion_is_refused() -> None:
    """A relay that hands the companion a payload made for someone else's code gets nowhere."""
    rng, primary, companion = _parties(b"other")
    offer, payload = _link(rng, primary, companion)
    other_offer = LinkOffer.generate(companion.public_key(), rng)
    with pytest.raises(LinkingTamperedError):
        open_linking_payload(other_offer, seal_linking_payload(offer, payload, rng))
    # The same secret shown with a swapped identity key: the AAD binds the key too.
    swapped = LinkOffer(PrivateKey.generate(rng).public_key(), offer.secret)
    with pytest.raises(LinkingTamperedError):
        open_linking_payload(swapped, seal_linking_payload(offer, payload, rng))


def test_a_primary_handed_a_swapped_code_cannot_link_the_real_companion() -> None:
    """The primary signs over the key in the code it read; the companion checks it is its own."""
    rng, primary, companion = _parties(b"swap")
    offer, _ = _link(rng, primary, companion)
    mallory = PrivateKey.generate(rng)
    # The primary was shown Mallory's key under the companion's secret: the payload opens (the
    # secret is right) but its account signature covers Mallory's key, not the companion's.
    _, payload_for_mallory = _link(rng, primary, mallory)
    with pytest.raises(InvalidSignatureError):
        open_linking_payload(offer, seal_linking_payload(offer, payload_for_mallory, rng))


def test_a_list_that_does_not_list_the_companion_is_refused() -> None:
    rng, primary, companion = _parties(b"unlisted")
    offer, payload = _link(rng, primary, companion)
    other = DeviceList.of(
        "alice", 2, 0, [(1, primary.public_key()), (2, PrivateKey.generate(rng).public_key())]
    )
    bad = LinkingPayload(
        payload.metadata,
        payload.primary_identity_key,
        payload.account_signature,
        sign_device_list(primary, other, rng),
    )
    with pytest.raises(DeviceListError):
        open_linking_payload(offer, seal_linking_payload(offer, bad, rng))


def test_signatures_by_the_wrong_key_raise() -> None:
    rng, primary, companion = _parties(b"wrongkey")
    metadata = LinkingMetadata("alice", 2, 5)
    signature = sign_account(primary, metadata, companion.public_key(), rng)
    verify_account_signature(primary.public_key(), metadata, companion.public_key(), signature)
    with pytest.raises(InvalidSignatureError):
        verify_account_signature(companion.public_key(), metadata, companion.public_key(), signature)
    with pytest.raises(InvalidSignatureError):
        verify_account_signature(
            primary.public_key(), LinkingMetadata("alice", 3, 5), companion.public_key(), signature
        )
    device_signature = sign_device(companion, metadata, primary.public_key(), rng)
    verify_device_signature(companion.public_key(), metadata, primary.public_key(), device_signature)
    other = PrivateKey.generate(rng).public_key()
    with pytest.raises(InvalidSignatureError):
        verify_device_signature(companion.public_key(), metadata, other, device_signature)
    identity = DeviceIdentity(metadata, companion.public_key(), signature, device_signature)
    with pytest.raises(InvalidSignatureError):
        identity.verify(other)
    with pytest.raises(DeviceListError):
        DeviceIdentity(metadata, primary.public_key(), signature, device_signature).verify(
            primary.public_key()
        )


def test_device_list_invariants() -> None:
    rng, primary, companion = _parties(b"invariants")
    p, c = primary.public_key(), companion.public_key()
    with pytest.raises(DeviceListError):
        DeviceList.of("alice", 1, 0, [(2, c)])
    with pytest.raises(DeviceListError):
        DeviceList.of("alice", 1, 0, [(1, p), (2, p)])
    with pytest.raises(DeviceListError):
        DeviceList("alice", 1, 0, (DeviceList.of("alice", 1, 0, [(1, p), (2, c)]).devices[::-1]))
    with pytest.raises(DeviceListError):
        DeviceList.of("", 1, 0, [(1, p)])
    with pytest.raises(DeviceListError):
        DeviceList.of("alice", -1, 0, [(1, p)])
    with pytest.raises(DeviceListError):
        LinkingMetadata("alice", 1, 0)
    listed = DeviceList.of("alice", 1, 0, [(1, p)])
    with pytest.raises(DeviceListError):
        listed.without_device(1, 0)
    with pytest.raises(DeviceListError):
        listed.without_device(2, 0)
    grown = listed.with_device(2, c, 9)
    assert grown.version == 2 and grown.identity_key(2) == c
    assert grown.without_device(2, 10).device_ids == (1,)
    with pytest.raises(InvalidKeyError):
        sign_device_list(companion, listed, rng)


def test_rollback_and_equivocation_are_refused() -> None:
    _rng, primary, companion = _parties(b"rollback")
    one = DeviceList.of("alice", 1, 0, [(1, primary.public_key())])
    two = one.with_device(2, companion.public_key(), 1)
    assert accept_device_list(None, one) is one
    assert accept_device_list(one, two) is two
    assert accept_device_list(two, two) is two
    with pytest.raises(DeviceListRollbackError):
        accept_device_list(two, one)
    fork = DeviceList.of("alice", 2, 1, [(1, primary.public_key()), (3, companion.public_key())])
    with pytest.raises(DeviceListRollbackError):
        accept_device_list(two, fork)
    with pytest.raises(DeviceListError):
        accept_device_list(two, DeviceList.of("bob", 3, 0, [(1, primary.public_key())]))


def test_a_list_is_checked_against_the_account_and_its_primary() -> None:
    rng, primary, companion = _parties(b"account")
    signed = sign_device_list(primary, DeviceList.of("alice", 1, 0, [(1, primary.public_key())]), rng)
    assert verify_device_list(signed.encode(), primary.public_key(), "alice").version == 1
    with pytest.raises(DeviceListError):
        verify_device_list(signed, primary.public_key(), "bob")
    with pytest.raises(InvalidSignatureError):
        verify_device_list(signed, companion.public_key(), "alice")
    # A list signed by a companion that lists itself as primary is refused by the real primary's key.
    rogue = sign_device_list(companion, DeviceList.of("alice", 9, 0, [(1, companion.public_key())]), rng)
    with pytest.raises(InvalidSignatureError):
        verify_device_list(rogue, primary.public_key(), "alice")


@pytest.mark.parametrize(
    "code",
    [
        "",
        "E2ELINK1-",
        "E2ELINK2-AAAA",
        "hello",
        "E2ELINK1-!!!!",
        "E2ELINK1-" + "A" * 300,
        "E2ELINK1-AAAAAAAA",
    ],
)
def test_bad_link_codes_raise(code: str) -> None:
    with pytest.raises(LinkCodeError):
        LinkOffer.from_code(code)


def test_a_mistyped_link_code_is_caught_by_its_check_bytes() -> None:
    rng, _, companion = _parties(b"typo")
    code = LinkOffer.generate(companion.public_key(), rng).to_code()
    position = len(code) // 2
    replacement = "B" if code[position] != "B" else "C"
    with pytest.raises(LinkCodeError):
        LinkOffer.from_code(code[:position] + replacement + code[position + 1 :])


def test_repr_hides_the_linking_secret() -> None:
    rng, _, companion = _parties(b"repr")
    offer = LinkOffer.generate(companion.public_key(), rng)
    assert offer.secret.hex() not in repr(offer) and "redacted" in repr(offer)
    assert offer.secret.hex() not in offer.mailbox.hex()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoders_raise_only_typed_errors(data: bytes) -> None:
    for decode in (
        LinkingMetadata.decode,
        DeviceList.decode,
        SignedDeviceList.decode,
        DeviceIdentity.decode,
        LinkingPayload.decode,
    ):
        with contextlib.suppress(E2EError):
            decode(data)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=2, max_value=2**31 - 1), unique=True, max_size=6),
    st.integers(0, 2**64 - 1),
)
def test_device_lists_round_trip(ids: list[int], version: int) -> None:
    rng = SeededRng(b"roundtrip" + str(ids).encode())
    keys = [PrivateKey.generate(rng).public_key() for _ in range(len(ids) + 1)]
    listed = DeviceList.of("alice", version, 7, [(1, keys[0]), *zip(ids, keys[1:], strict=True)])
    assert DeviceList.decode(listed.encode()) == listed


def test_decoders_refuse_unknown_versions_and_trailing_bytes() -> None:
    rng, primary, _ = _parties(b"versions")
    listed = DeviceList.of("alice", 1, 0, [(1, primary.public_key())])
    with pytest.raises(DecodeError):
        DeviceList.decode(b"\x02" + listed.encode()[1:])
    with pytest.raises(DecodeError):
        DeviceList.decode(listed.encode() + b"\x00")
    signed = sign_device_list(primary, listed, rng).encode()
    with pytest.raises(DecodeError):
        SignedDeviceList.decode(signed + b"\x00")
    with pytest.raises(DecodeError):
        LinkingMetadata.decode(LinkingMetadata("alice", 2, 0).encode()[:-1])
