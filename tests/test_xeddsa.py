"""XEdDSA: round trips, byte equality and cross-verification with libsignal's C implementation,
the Ed25519 verification path against published vectors, and tampering of every bit.

``axolotl_curve25519`` is python-axolotl's binding of libsignal-protocol-c's ``curve_sigs.c``:
``calculateSignature(random64, private, message)`` and ``verifySignature(public, message,
signature)``, which returns 0 for a good signature.
"""

from __future__ import annotations

import hashlib

import axolotl_curve25519
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp
from published_vectors import Ed25519Vector, load_ed25519_sign_input

from e2e.errors import InvalidSignatureError
from e2e.keys import KeyPair, PrivateKey, PublicKey

_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_HASH1_PREFIX = b"\xfe" + b"\xff" * 31

ED25519_VECTORS = load_ed25519_sign_input()


def _edwards_sign_bit(key: PrivateKey) -> int:
    return crypto_scalarmult_ed25519_base_noclamp(key.serialize())[31] >> 7


def _keys_with_both_sign_bits(rng) -> list[PrivateKey]:
    """Two keys whose Edwards public keys have sign bit 0 and 1, in that order."""
    found: dict[int, PrivateKey] = {}
    while len(found) < 2:
        key = PrivateKey.generate(rng)
        found.setdefault(_edwards_sign_bit(key), key)
    return [found[0], found[1]]


def _fixed(random: bytes):
    return lambda n: random[:n]


def test_sign_and_verify_round_trip(rng) -> None:
    for length in (0, 1, 32, 33, 1000):
        key = KeyPair.generate(rng)
        message = rng(length)
        signature = key.sign(message, rng)
        assert len(signature) == 64
        key.public_key.verify(message, signature)


def test_signing_uses_64_random_bytes_and_is_randomised(rng) -> None:
    key = KeyPair.generate(rng)
    requests: list[int] = []

    def recording_rng(n: int) -> bytes:
        requests.append(n)
        return rng(n)

    first = key.sign(b"message", recording_rng)
    second = key.sign(b"message", recording_rng)
    assert requests == [64, 64]
    assert first != second
    key.public_key.verify(b"message", first)
    key.public_key.verify(b"message", second)


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_signatures_are_byte_identical_to_libsignal_c(sign_bit: int, rng) -> None:
    key = _keys_with_both_sign_bits(rng)[sign_bit]
    for length in (0, 7, 64, 300):
        message, random = rng(length), rng(64)
        ours = key.sign(message, _fixed(random))
        theirs = axolotl_curve25519.calculateSignature(random, key.serialize(), message)
        assert ours == theirs
        assert ours[63] >> 7 == sign_bit


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_cross_verification_with_libsignal_c(sign_bit: int, rng) -> None:
    key = _keys_with_both_sign_bits(rng)[sign_bit]
    public = key.public_key()
    for _ in range(4):
        message = rng(48)
        ours = key.sign(message, rng)
        assert axolotl_curve25519.verifySignature(public.raw, message, ours) == 0
        theirs = axolotl_curve25519.calculateSignature(rng(64), key.serialize(), message)
        public.verify(message, theirs)
        # Both refuse a signature over another message.
        assert axolotl_curve25519.verifySignature(public.raw, message + b"!", ours) != 0
        with pytest.raises(InvalidSignatureError):
            public.verify(message + b"!", theirs)


def _spec_literal_sign(key: PrivateKey, message: bytes, random: bytes) -> bytes:
    """XEdDSA exactly as specified (§2.3 calculate_key_pair, §3.3 xeddsa_sign): negate ``a`` when
    ``A``'s sign bit is 1, so that the signature never carries a sign bit."""
    a = int.from_bytes(key.serialize(), "little") % _Q
    big_a = crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little"))
    if big_a[31] & 0x80:
        a = -a % _Q
        big_a = crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little"))
    assert not big_a[31] & 0x80
    r = int.from_bytes(
        hashlib.sha512(_HASH1_PREFIX + a.to_bytes(32, "little") + message + random).digest(), "little"
    )
    big_r = crypto_scalarmult_ed25519_base_noclamp((r % _Q).to_bytes(32, "little"))
    h = int.from_bytes(hashlib.sha512(big_r + big_a + message).digest(), "little")
    s = (r + h * a) % _Q
    return big_r + s.to_bytes(32, "little")


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_spec_literal_signatures_verify(sign_bit: int, rng) -> None:
    key = _keys_with_both_sign_bits(rng)[sign_bit]
    message = b"an XEdDSA signature as the specification writes it"
    signature = _spec_literal_sign(key, message, rng(64))
    assert signature[63] & 0x80 == 0
    key.public_key().verify(message, signature)
    assert axolotl_curve25519.verifySignature(key.public_key().raw, message, signature) == 0
    if sign_bit == 1:
        # The negated scalar signs differently from libsignal's form, yet both verify.
        assert signature != key.sign(message, rng)


def test_every_bit_flip_of_signature_message_or_key_is_refused(rng) -> None:
    key = KeyPair.generate(rng)
    message = rng(24)
    signature = key.sign(message, rng)
    key.public_key.verify(message, signature)
    for bit in range(len(signature) * 8):
        tampered = bytearray(signature)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InvalidSignatureError):
            key.public_key.verify(message, bytes(tampered))
    for bit in range(len(message) * 8):
        tampered = bytearray(message)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InvalidSignatureError):
            key.public_key.verify(bytes(tampered), signature)
    # Bits 0..254 of the key; bit 255 is not part of a Curve25519 u coordinate (next test).
    for bit in range(255):
        tampered = bytearray(key.public_key.raw)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InvalidSignatureError):
            PublicKey(bytes(tampered)).verify(message, signature)


def test_bit_255_of_the_key_is_ignored_as_libsignal_does(rng) -> None:
    # RFC 7748 §5 masks bit 255 of u; libsignal (C and Rust) does so when verifying, and so do we.
    key = KeyPair.generate(rng)
    message = b"bit 255"
    signature = key.sign(message, rng)
    aliased = bytearray(key.public_key.raw)
    aliased[31] |= 0x80
    PublicKey(bytes(aliased)).verify(message, signature)
    assert axolotl_curve25519.verifySignature(bytes(aliased), message, signature) == 0


def test_non_canonical_s_is_refused(rng) -> None:
    # s + q encodes the same scalar (and fits: s < q < 2**253); accepting it would make
    # signatures malleable.
    key = KeyPair.generate(rng)
    signature = key.sign(b"malleable?", rng)
    sign_bit = signature[63] & 0x80
    s = int.from_bytes(signature[32:63] + bytes((signature[63] & 0x7F,)), "little")
    forged = bytearray(signature[:32] + (s + _Q).to_bytes(32, "little"))
    forged[63] |= sign_bit
    with pytest.raises(InvalidSignatureError):
        key.public_key.verify(b"malleable?", bytes(forged))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 64, b"\xff" * 64])
def test_malformed_signatures_are_refused(signature: bytes, rng) -> None:
    key = KeyPair.generate(rng)
    with pytest.raises(InvalidSignatureError):
        key.public_key.verify(b"message", signature)


def test_non_bytes_signature_is_refused(rng) -> None:
    key = KeyPair.generate(rng)
    signature = key.sign(b"message", rng)
    with pytest.raises(InvalidSignatureError):
        key.public_key.verify(b"message", bytearray(signature))  # type: ignore[arg-type]


def test_key_without_an_edwards_equivalent_is_refused(rng) -> None:
    # u = p - 1 maps to no Edwards point (y = (u - 1) / (u + 1) divides by zero).
    key = KeyPair.generate(rng)
    signature = key.sign(b"message", rng)
    with pytest.raises(InvalidSignatureError):
        PublicKey((_P - 1).to_bytes(32, "little")).verify(b"message", signature)


def _montgomery_from_edwards(public_key: bytes) -> tuple[bytes, int]:
    """The Curve25519 u of an Ed25519 public key, ``u = (1 + y) / (1 - y)``, and its x sign bit."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, -1, _P) % _P
    return u.to_bytes(32, "little"), public_key[31] >> 7


@pytest.mark.parametrize(
    "vector", ED25519_VECTORS[:3], ids=["rfc8032-test1", "rfc8032-test2", "rfc8032-test3"]
)
def test_rfc8032_vectors_on_the_verification_path(vector: Ed25519Vector) -> None:
    # Verification is Ed25519 against the Edwards key rebuilt from u and the sign bit carried in
    # the signature, so a published Ed25519 signature verifies once that bit is put in.
    u, sign_bit = _montgomery_from_edwards(vector.public_key)
    carried = vector.signature[:63] + bytes((vector.signature[63] | sign_bit << 7,))
    PublicKey(u).verify(vector.message, carried)
    flipped = vector.signature[:63] + bytes((vector.signature[63] | (1 - sign_bit) << 7,))
    with pytest.raises(InvalidSignatureError):
        PublicKey(u).verify(vector.message, flipped)
    # The Ed25519 secret scalar, as a Curve25519 private key, has this very public key.
    scalar = hashlib.sha512(vector.seed).digest()[:32]
    assert PrivateKey(scalar).public_key().raw == u


def test_whole_ed25519_reference_set_on_the_verification_path() -> None:
    # All 1024 vectors of sign.input (RFC 8032's TEST 1-3 are its first three lines).
    assert len(ED25519_VECTORS) == 1024
    for vector in ED25519_VECTORS:
        u, sign_bit = _montgomery_from_edwards(vector.public_key)
        carried = vector.signature[:63] + bytes((vector.signature[63] | sign_bit << 7,))
        PublicKey(u).verify(vector.message, carried)


@settings(max_examples=60, deadline=None)
@given(
    scalar=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=200),
    random=st.binary(min_size=64, max_size=64),
)
def test_any_key_and_message_agree_with_libsignal_c(scalar: bytes, message: bytes, random: bytes) -> None:
    key = PrivateKey(scalar)
    signature = key.sign(message, _fixed(random))
    assert signature == axolotl_curve25519.calculateSignature(random, key.serialize(), message)
    key.public_key().verify(message, signature)
    assert axolotl_curve25519.verifySignature(key.public_key().raw, message, signature) == 0


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_sign_as_specified_equals_the_literal_transcription(sign_bit: int, rng) -> None:
    key = _keys_with_both_sign_bits(rng)[sign_bit]
    message, random = b"the specification's convention", rng(64)
    signature = key.sign_as_specified(message, lambda n: random)
    assert signature == _spec_literal_sign(key, message, random)
    assert signature != key.sign(message, lambda n: random)
    key.public_key().verify_as_specified(message, signature)
    key.public_key().verify(message, signature)
    assert axolotl_curve25519.verifySignature(key.public_key().raw, message, signature) == 0


def test_verify_as_specified_refuses_what_the_specification_refuses(rng) -> None:
    key = _keys_with_both_sign_bits(rng)[1]
    message = b"m"
    libsignal_form = key.sign(message, rng)
    assert libsignal_form[63] & 0x80
    key.public_key().verify(message, libsignal_form)
    # s ≥ 2**253: the sign bit libsignal stores is not allowed by the specification.
    with pytest.raises(InvalidSignatureError):
        key.public_key().verify_as_specified(message, libsignal_form)
    spec_form = key.sign_as_specified(message, rng)
    with pytest.raises(InvalidSignatureError):
        key.public_key().verify_as_specified(message + b"!", spec_form)
    with pytest.raises(InvalidSignatureError):
        key.public_key().verify_as_specified(message, spec_form[:63])
    # u ≥ p is refused by the specification; libsignal reduces it modulo p.
    for unreduced in (_P, _P + 1, 2**256 - 1):
        with pytest.raises(InvalidSignatureError):
            PublicKey(unreduced.to_bytes(32, "little")).verify_as_specified(message, spec_form)
    with pytest.raises(InvalidSignatureError):
        PublicKey((_P - 1).to_bytes(32, "little")).verify_as_specified(message, spec_form)
