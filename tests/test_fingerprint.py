"""Safety numbers against libsignal's published vectors, and the failure modes of comparison.

The constants are libsignal's (``rust/protocol/src/fingerprint.rs``, tests module, at commit
4ea5b762ba43c6e5f50f5ecea0aad98e3fa7e651; the same vectors are ``testVectorsVersion1`` and
``testVectorsVersion2`` of libsignal-protocol-java's ``NumericFingerprintGeneratorTest``).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError, FingerprintMismatchError, FingerprintVersionMismatchError
from e2e.fingerprint import (
    ITERATIONS,
    DisplayableFingerprint,
    Fingerprint,
    ScannableFingerprint,
    logical_fingerprint,
)
from e2e.keys import KeyPair, PrivateKey, PublicKey

ALICE_IDENTITY = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
BOB_IDENTITY = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
ALICE_STABLE_ID = b"+14152222222"
BOB_STABLE_ID = b"+14153333333"
DISPLAYABLE_FINGERPRINT_V1 = "300354477692869396892869876765458257569162576843440918079131"
ALICE_SCANNABLE_FINGERPRINT_V1 = bytes.fromhex(
    "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    "1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)
BOB_SCANNABLE_FINGERPRINT_V1 = bytes.fromhex(
    "080112220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
    "1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
)
ALICE_SCANNABLE_FINGERPRINT_V2 = bytes.fromhex(
    "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    "1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)
BOB_SCANNABLE_FINGERPRINT_V2 = bytes.fromhex(
    "080212220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
    "1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
)

# Random identities get fewer iterations, as libsignal's own tests do, to keep the suite fast.
FAST = 1024


def _alice_and_bob(version: int = 1) -> tuple[Fingerprint, Fingerprint]:
    alice = PublicKey.deserialize(ALICE_IDENTITY)
    bob = PublicKey.deserialize(BOB_IDENTITY)
    return (
        Fingerprint.create(ALICE_STABLE_ID, alice, BOB_STABLE_ID, bob, version=version),
        Fingerprint.create(BOB_STABLE_ID, bob, ALICE_STABLE_ID, alice, version=version),
    )


def test_libsignal_vectors_version_1() -> None:
    alice, bob = _alice_and_bob()
    assert str(alice.displayable) == DISPLAYABLE_FINGERPRINT_V1
    assert str(bob.displayable) == DISPLAYABLE_FINGERPRINT_V1
    assert alice.scannable.serialize() == ALICE_SCANNABLE_FINGERPRINT_V1
    assert bob.scannable.serialize() == BOB_SCANNABLE_FINGERPRINT_V1
    alice.scannable.compare(BOB_SCANNABLE_FINGERPRINT_V1)
    bob.scannable.compare(ALICE_SCANNABLE_FINGERPRINT_V1)
    alice.displayable.compare(DISPLAYABLE_FINGERPRINT_V1)


def test_libsignal_vectors_version_2_change_only_the_scannable_form() -> None:
    alice, bob = _alice_and_bob(version=2)
    assert str(alice.displayable) == DISPLAYABLE_FINGERPRINT_V1
    assert alice.scannable.serialize() == ALICE_SCANNABLE_FINGERPRINT_V2
    assert bob.scannable.serialize() == BOB_SCANNABLE_FINGERPRINT_V2


def test_libsignal_scannable_encoding() -> None:
    encoded = ScannableFingerprint(2, b"\x12" * 32, b"\xba" * 32).serialize()
    assert encoded.hex() == "080212220a20" + "12" * 32 + "1a220a20" + "ba" * 32


def test_scannable_round_trip() -> None:
    alice, _ = _alice_and_bob()
    parsed = ScannableFingerprint.deserialize(ALICE_SCANNABLE_FINGERPRINT_V1)
    assert parsed.version == 1
    assert parsed.our_fingerprint == alice.scannable.our_fingerprint
    assert parsed.their_fingerprint == alice.scannable.their_fingerprint
    assert parsed.serialize() == ALICE_SCANNABLE_FINGERPRINT_V1


def test_logical_fingerprint_is_iterated_sha512() -> None:
    # The definition written out the way libsignal-protocol-java states it.
    key = PublicKey.deserialize(ALICE_IDENTITY)
    digest = b"\x00\x00" + ALICE_IDENTITY + ALICE_STABLE_ID
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + ALICE_IDENTITY).digest()
    assert logical_fingerprint(key, ALICE_STABLE_ID) == digest
    digits = DisplayableFingerprint(digest, digest).our_digits
    assert digits in (DISPLAYABLE_FINGERPRINT_V1[:30], DISPLAYABLE_FINGERPRINT_V1[30:])


def test_digits_are_five_byte_chunks_modulo_100000() -> None:
    chunk = (123456).to_bytes(5, "big")  # 123456 mod 100000 = 23456
    small = (7).to_bytes(5, "big")  # leading zeros are kept: 00007
    display = DisplayableFingerprint(chunk * 6, small * 6)
    assert display.our_digits == "23456" * 6
    assert display.their_digits == "00007" * 6
    # The smaller half comes first whichever side is ours.
    assert str(display) == "00007" * 6 + "23456" * 6
    assert str(DisplayableFingerprint(small * 6, chunk * 6)) == str(display)


def test_matching_random_identities(rng) -> None:
    alice, bob = KeyPair.generate(rng).public_key, KeyPair.generate(rng).public_key
    ours = Fingerprint.create(ALICE_STABLE_ID, alice, BOB_STABLE_ID, bob, iterations=FAST)
    theirs = Fingerprint.create(BOB_STABLE_ID, bob, ALICE_STABLE_ID, alice, iterations=FAST)
    assert str(ours.displayable) == str(theirs.displayable)
    assert len(str(ours.displayable)) == 60
    ours.scannable.compare(theirs.scannable.serialize())
    theirs.scannable.compare(ours.scannable.serialize())
    # Our own code shown back to us is not a match: the halves are swapped.
    with pytest.raises(FingerprintMismatchError):
        ours.scannable.compare(ours.scannable.serialize())


def test_man_in_the_middle_is_detected(rng) -> None:
    alice, bob, mallory = (KeyPair.generate(rng).public_key for _ in range(3))
    # Alice was given Mallory's key for Bob.
    ours = Fingerprint.create(ALICE_STABLE_ID, alice, BOB_STABLE_ID, mallory, iterations=FAST)
    theirs = Fingerprint.create(BOB_STABLE_ID, bob, ALICE_STABLE_ID, alice, iterations=FAST)
    assert str(ours.displayable) != str(theirs.displayable)
    with pytest.raises(FingerprintMismatchError):
        ours.displayable.compare(str(theirs.displayable))
    with pytest.raises(FingerprintMismatchError):
        ours.scannable.compare(theirs.scannable.serialize())
    with pytest.raises(FingerprintMismatchError):
        theirs.scannable.compare(ours.scannable.serialize())


def test_mismatching_identifiers_are_detected(rng) -> None:
    alice, bob = KeyPair.generate(rng).public_key, KeyPair.generate(rng).public_key
    ours = Fingerprint.create(b"+141512222222", alice, BOB_STABLE_ID, bob, iterations=FAST)
    theirs = Fingerprint.create(BOB_STABLE_ID, bob, ALICE_STABLE_ID, alice, iterations=FAST)
    with pytest.raises(FingerprintMismatchError):
        ours.displayable.compare(str(theirs.displayable))
    with pytest.raises(FingerprintMismatchError):
        theirs.scannable.compare(ours.scannable.serialize())


def test_displayable_compare_ignores_spacing_and_rejects_one_wrong_digit() -> None:
    alice, _ = _alice_and_bob()
    grouped = " ".join(DISPLAYABLE_FINGERPRINT_V1[i : i + 5] for i in range(0, 60, 5))
    alice.displayable.compare(grouped)
    wrong = DISPLAYABLE_FINGERPRINT_V1[:-1] + str((int(DISPLAYABLE_FINGERPRINT_V1[-1]) + 1) % 10)
    for bad in (wrong, DISPLAYABLE_FINGERPRINT_V1[:-1], DISPLAYABLE_FINGERPRINT_V1 + "0", ""):
        with pytest.raises(FingerprintMismatchError):
            alice.displayable.compare(bad)


def test_scannable_version_mismatch_raises() -> None:
    alice, _ = _alice_and_bob()
    with pytest.raises(FingerprintVersionMismatchError) as caught:
        alice.scannable.compare(BOB_SCANNABLE_FINGERPRINT_V2)
    assert (caught.value.theirs, caught.value.ours) == (2, 1)
    assert isinstance(caught.value, FingerprintMismatchError)
    # A code without a version field counts as version 0, as in libsignal.
    with pytest.raises(FingerprintVersionMismatchError) as caught:
        alice.scannable.compare(BOB_SCANNABLE_FINGERPRINT_V1[2:])
    assert caught.value.theirs == 0


@pytest.mark.parametrize(
    "scanned",
    [
        BOB_SCANNABLE_FINGERPRINT_V1[:-1],  # truncated content
        BOB_SCANNABLE_FINGERPRINT_V1[:1],  # truncated varint
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a varint of 11 bytes
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # a varint above 2**64
        BOB_SCANNABLE_FINGERPRINT_V1[:2] + BOB_SCANNABLE_FINGERPRINT_V1,  # version twice
        BOB_SCANNABLE_FINGERPRINT_V1[:38],  # no remote half
        b"\x08\x01\x12\x00\x1a\x00",  # halves without content
        b"\x08\x01\x15\x00\x00\x00\x00",  # a 32-bit fixed field
    ],
)
def test_malformed_scanned_codes_raise_decode_error(scanned: bytes) -> None:
    alice, _ = _alice_and_bob()
    with pytest.raises(DecodeError):
        alice.scannable.compare(scanned)
    with pytest.raises(DecodeError):
        ScannableFingerprint.deserialize(scanned)


def test_unknown_fields_are_skipped() -> None:
    alice, _ = _alice_and_bob()
    alice.scannable.compare(BOB_SCANNABLE_FINGERPRINT_V1 + b"\x20\x05" + b"\x2a\x01\x00")


def test_wrong_length_halves_do_not_deserialize() -> None:
    short_local = b"\x08\x01" + b"\x12\x21\x0a\x1f" + b"\x01" * 31 + b"\x1a\x22\x0a\x20" + b"\x02" * 32
    with pytest.raises(DecodeError):
        ScannableFingerprint.deserialize(short_local)
    # Comparison needs no length check of its own: a short half can never equal a 32-byte one.
    alice, _ = _alice_and_bob()
    with pytest.raises(FingerprintMismatchError):
        alice.scannable.compare(short_local)


def test_bad_arguments() -> None:
    key = PublicKey.deserialize(ALICE_IDENTITY)
    for iterations in (0, 1, 1_000_001):
        with pytest.raises(ValueError):
            logical_fingerprint(key, ALICE_STABLE_ID, iterations)
    with pytest.raises(TypeError):
        logical_fingerprint(key, "+14152222222", FAST)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DisplayableFingerprint(b"\x00" * 29, b"\x00" * 30)
    with pytest.raises(ValueError):
        ScannableFingerprint(1, b"\x00" * 31, b"\x00" * 32)
    with pytest.raises(ValueError):
        ScannableFingerprint(-1, b"\x00" * 32, b"\x00" * 32)


@settings(max_examples=30, deadline=None)
@given(
    our_scalar=st.binary(min_size=32, max_size=32),
    their_scalar=st.binary(min_size=32, max_size=32),
    our_id=st.binary(max_size=40),
    their_id=st.binary(max_size=40),
)
def test_both_sides_always_agree(
    our_scalar: bytes, their_scalar: bytes, our_id: bytes, their_id: bytes
) -> None:
    ours_key, theirs_key = PrivateKey(our_scalar).public_key(), PrivateKey(their_scalar).public_key()
    ours = Fingerprint.create(our_id, ours_key, their_id, theirs_key, iterations=FAST)
    theirs = Fingerprint.create(their_id, theirs_key, our_id, ours_key, iterations=FAST)
    assert str(ours.displayable) == str(theirs.displayable)
    assert len(str(ours.displayable)) == 60 and str(ours.displayable).isdigit()
    ours.displayable.compare(str(theirs.displayable))
    ours.scannable.compare(theirs.scannable.serialize())
    theirs.scannable.compare(ours.scannable.serialize())
