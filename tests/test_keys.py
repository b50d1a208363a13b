"""Curve25519 keys: encoding strictness, clamping, redaction, X25519 against RFC 7748, low-order points."""

from __future__ import annotations

import axolotl_curve25519
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from published_vectors import load_nist_vectors

from e2e.errors import DecodeError, InvalidKeyError
from e2e.keys import DJB_TYPE, KeyPair, PrivateKey, PublicKey

_P = 2**255 - 19

# The u coordinates Bernstein lists as the ones to reject for "contributory" behaviour
# (cr.yp.to/ecdh.html, "How do I validate Curve25519 public keys?"): 0, 1, the two points of
# order 8, p - 1, p, p + 1, and the 256-bit aliases p + (order-8 points), 2p - 1, 2p, 2p + 1.
_ORDER_8_A = 325606250916557431795983626356110631294008115727848805560023387167927233504
_ORDER_8_B = 39382357235489614581723060781553021112529911719440698176882885853963445705823
CANONICAL_LOW_ORDER_U = [0, 1, _ORDER_8_A, _ORDER_8_B, _P - 1, _P, _P + 1]
ALIASES_ABOVE_2_255 = [_P + _ORDER_8_A, _P + _ORDER_8_B, 2 * _P - 1, 2 * _P, 2 * _P + 1]

# RFC 7748 §5 makes every implementation (ours, libsignal's, OpenSSL's) ignore bit 255 of a
# received u coordinate.  So each canonical low-order value also arrives with that bit set and
# must still be refused, while the five 256-bit aliases, read modulo 2**255, are other points.
_TOP_BIT = 1 << 255
LOW_ORDER_POINTS = [u.to_bytes(32, "little") for u in CANONICAL_LOW_ORDER_U] + [
    (u | _TOP_BIT).to_bytes(32, "little") for u in CANONICAL_LOW_ORDER_U
]


def test_low_order_list_matches_the_published_encodings() -> None:
    # The listed values as the 32-byte strings the literature (and libsodium's blocklist) prints.
    encoded = [u.to_bytes(32, "little").hex() for u in CANONICAL_LOW_ORDER_U + ALIASES_ABOVE_2_255]
    assert encoded[2] == "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
    assert encoded[3] == "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"
    assert encoded[4] == "ec" + "ff" * 30 + "7f"
    assert encoded[7] == "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"
    assert encoded[8] == "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"
    assert encoded[11] == "db" + "ff" * 31
    assert len(set(encoded)) == 12


@pytest.mark.parametrize(
    "point", LOW_ORDER_POINTS, ids=[p.hex()[:4] + p.hex()[-2:] for p in LOW_ORDER_POINTS]
)
def test_agreement_with_a_low_order_point_raises(point: bytes, rng) -> None:
    for _ in range(4):
        our_key = KeyPair.generate(rng)
        # libsignal's C implementation gets the all-zero output we refuse.
        assert axolotl_curve25519.calculateAgreement(our_key.private_key.serialize(), point) == bytes(32)
        with pytest.raises(InvalidKeyError):
            our_key.agree(PublicKey(point))
        with pytest.raises(InvalidKeyError):
            our_key.private_key.agree(PublicKey(point))


@pytest.mark.parametrize("u", ALIASES_ABOVE_2_255, ids=lambda u: u.to_bytes(32, "little").hex()[:4])
def test_256_bit_aliases_are_read_modulo_2_255_like_libsignal(u: int, rng) -> None:
    our_key = KeyPair.generate(rng)
    aliased = PublicKey(u.to_bytes(32, "little"))
    masked = PublicKey((u - _TOP_BIT).to_bytes(32, "little"))
    shared = our_key.agree(aliased)
    assert shared != bytes(32)
    assert shared == our_key.agree(masked)
    assert shared == axolotl_curve25519.calculateAgreement(our_key.private_key.serialize(), aliased.raw)


@pytest.mark.parametrize("vector", load_nist_vectors("asymmetric/X25519/rfc7748.txt"))
def test_x25519_rfc7748_vectors(vector: dict[str, str]) -> None:
    private = PrivateKey(bytes.fromhex(vector["INPUT_SCALAR"]))
    shared = private.agree(PublicKey(bytes.fromhex(vector["INPUT_U"])))
    assert shared.hex() == vector["OUTPUT_U"]


def test_x25519_rfc7748_section_6_1() -> None:
    # RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret.
    alice = PrivateKey(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = PrivateKey(bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public_key().raw.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob.public_key().raw.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert alice.agree(bob.public_key()).hex() == shared
    assert bob.agree(alice.public_key()).hex() == shared


def test_public_key_round_trip(rng) -> None:
    key = KeyPair.generate(rng).public_key
    encoded = key.serialize()
    assert encoded[0] == DJB_TYPE == 0x05
    assert len(encoded) == 33
    assert encoded[1:] == key.raw
    assert PublicKey.deserialize(encoded) == key
    assert hash(PublicKey.deserialize(encoded)) == hash(key)


@pytest.mark.parametrize(
    "encoded",
    [
        b"",
        b"\x05",
        b"\x05" + b"\x01" * 31,
        b"\x05" + b"\x01" * 33,
        b"\x01" * 32,  # the bare key without its type byte
        b"\x00" + b"\x01" * 32,
        b"\x06" + b"\x01" * 32,
        b"\x85" + b"\x01" * 32,
    ],
)
def test_public_key_deserialize_rejects_malformed(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        PublicKey.deserialize(encoded)


def test_public_key_deserialize_rejects_non_bytes() -> None:
    for value in (bytearray(b"\x05" + b"\x01" * 32), memoryview(b"\x05" + b"\x01" * 32), "05" * 33, None):
        with pytest.raises(DecodeError):
            PublicKey.deserialize(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33, bytearray(32), "x" * 32])
def test_raw_keys_of_the_wrong_length_or_type(raw: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey(raw)
    with pytest.raises(InvalidKeyError):
        PrivateKey(raw)


def test_private_keys_are_clamped() -> None:
    assert PrivateKey(b"\xff" * 32).serialize() == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert PrivateKey(b"\x00" * 32).serialize() == b"\x00" * 31 + b"\x40"
    # Clamping does not change the key: the unclamped bytes give the same public key and DH.
    unclamped = bytes.fromhex("11ae7c64d1e61cd596b76a0db5012673391cae66edbfcf073b4da80516a474c9")
    clamped = PrivateKey(unclamped)
    assert clamped.serialize()[0] == 0x10 and clamped.serialize()[31] == 0x49
    assert clamped == PrivateKey(clamped.serialize())
    reference = X25519PrivateKey.from_private_bytes(unclamped).public_key().public_bytes_raw()
    assert clamped.public_key().raw == reference


def test_public_keys_agree_with_independent_implementations(rng) -> None:
    for _ in range(8):
        scalar = rng(32)
        ours = PrivateKey(scalar).public_key().raw
        assert ours == X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()
        assert ours == axolotl_curve25519.generatePublicKey(PrivateKey(scalar).serialize())


def test_agreement_is_symmetric_and_matches_libsignal_c(rng) -> None:
    alice, bob = KeyPair.generate(rng), KeyPair.generate(rng)
    shared = alice.agree(bob.public_key)
    assert shared == bob.agree(alice.public_key)
    assert shared == axolotl_curve25519.calculateAgreement(alice.private_key.serialize(), bob.public_key.raw)


def test_generate_draws_32_bytes_from_rng() -> None:
    requests: list[int] = []

    def recording_rng(n: int) -> bytes:
        requests.append(n)
        return b"\x07" * n

    key = KeyPair.generate(recording_rng)
    assert requests == [32]
    assert key.private_key == PrivateKey(b"\x07" * 32)


def test_key_pair_rejects_a_foreign_public_key(rng) -> None:
    ours, other = KeyPair.generate(rng), KeyPair.generate(rng)
    assert KeyPair(ours.private_key, ours.public_key) == ours
    with pytest.raises(InvalidKeyError):
        KeyPair(ours.private_key, other.public_key)


def test_equality_and_hashing(rng) -> None:
    one, two = KeyPair.generate(rng), KeyPair.generate(rng)
    assert one != two
    assert one.private_key != two.private_key
    assert one.public_key != two.public_key
    assert one.public_key != one.public_key.serialize()
    assert len({one.public_key, PublicKey(one.public_key.raw), two.public_key}) == 2
    assert len({one, KeyPair(PrivateKey(one.private_key.serialize())), two}) == 2


def test_secrets_never_appear_in_repr_or_str(rng) -> None:
    key_pair = KeyPair.generate(rng)
    secret = key_pair.private_key.serialize()
    for shown in (
        repr(key_pair),
        str(key_pair),
        repr(key_pair.private_key),
        str(key_pair.private_key),
        f"{key_pair.private_key}",
        repr([key_pair]),
        repr({"key": key_pair.private_key}),
    ):
        assert secret.hex() not in shown
        assert secret.hex().upper() not in shown
        assert repr(secret) not in shown
    assert "redacted" in repr(key_pair.private_key)
    # The public half is shown, which is what a reader of the repr needs.
    assert key_pair.public_key.raw.hex() in repr(key_pair)


def test_fingerprint_is_a_prefix_of_the_public_key(rng) -> None:
    key = KeyPair.generate(rng).public_key
    assert key.fingerprint() == key.raw.hex()[:8]
    assert key.fingerprint(16) == key.raw.hex()[:16]
