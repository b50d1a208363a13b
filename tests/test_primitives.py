"""The fast message-path primitives equal the reference definitions byte for byte."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import InvalidMessageError
from e2e.kdf import ChainKey, RootKey, hkdf
from e2e.primitives import (
    HmacKey,
    _cipher_contexts,
    cbc_decrypt,
    cbc_encrypt,
    chain_step,
    derive_message_keys,
    hmac_sha256,
    mac_parts,
    root_step,
    verify_hmac_sha256,
)

keys32 = st.binary(min_size=32, max_size=32)


# RFC 4231 test case 2 (HMAC-SHA256 with key "Jefe").
def test_hmac_rfc4231_case_2() -> None:
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == expected
    assert HmacKey(b"Jefe").digest(b"what do ya want ", b"for nothing?").hex() == expected


@given(st.binary(max_size=64), st.binary(max_size=300))
def test_hmac_equals_the_standard_library(key: bytes, message: bytes) -> None:
    expected = hmac.digest(key, message, "sha256")
    assert hmac_sha256(key, message) == expected
    assert HmacKey(key).digest(message[:7], memoryview(message)[7:]) == expected
    assert mac_parts(key, message[:5], message[5:]) == expected


def test_long_mac_input_is_streamed_with_the_same_result() -> None:
    key, head, tail = bytes(range(32)), b"ad" * 33, bytes(100_000)
    assert mac_parts(key, head, memoryview(tail)) == hmac.digest(key, head + tail, "sha256")


@given(st.binary(min_size=65, max_size=200), st.binary(max_size=100))
def test_long_keys_are_hashed_first(key: bytes, message: bytes) -> None:
    # RFC 2104 §2: a key longer than the 64-byte block is replaced by its SHA-256 digest.
    expected = hmac.digest(key, message, "sha256")
    assert hmac_sha256(key, message) == expected
    assert HmacKey(key).digest(message) == expected


@pytest.mark.parametrize("length", [8, 16, 32])
def test_verify_hmac_accepts_truncated_tags_and_refuses_changed_ones(length: int) -> None:
    key, message = bytes(range(40)), b"a message"
    tag = hmac.digest(key, message, "sha256")[:length]
    verify_hmac_sha256(key, message, tag)
    for position in (0, length - 1):
        changed = bytearray(tag)
        changed[position] ^= 0x01
        with pytest.raises(InvalidMessageError):
            verify_hmac_sha256(key, message, bytes(changed))
    for bad in (tag[:7], tag + b"\x00" * (33 - length), b""):
        with pytest.raises(InvalidMessageError):
            verify_hmac_sha256(key, message, bad)


@given(keys32)
def test_chain_step_and_message_keys_equal_kdf_module(key: bytes) -> None:
    seed, following = chain_step(key)
    reference = ChainKey(key, 0)
    assert following == reference.next().key
    keys = derive_message_keys(seed)
    expected = reference.message_keys()
    assert keys == expected.cipher_key + expected.mac_key + expected.iv
    assert keys == hkdf(bytes(32), seed, b"WhisperMessageKeys", 80)


@given(keys32, keys32)
def test_root_step_equals_kdf_module(root: bytes, dh_out: bytes) -> None:
    new_root, chain = root_step(root, dh_out)
    expected_root, expected_chain = RootKey(root).kdf_rk(dh_out)
    assert (new_root, chain) == (expected_root.key, expected_chain.key)


@given(keys32, st.binary(min_size=16, max_size=16), st.binary(max_size=100))
def test_cbc_equals_the_public_cryptography_api(key: bytes, iv: bytes, plaintext: bytes) -> None:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    expected = encryptor.update(padded) + encryptor.finalize()
    assert cbc_encrypt(key, iv, plaintext) == expected
    assert cbc_decrypt(key, iv, expected) == plaintext


@given(keys32, st.binary(min_size=16, max_size=16), st.binary(min_size=1, max_size=100))
def test_both_ways_of_making_cipher_contexts_agree(key: bytes, iv: bytes, data: bytes) -> None:
    """The internal constructors the message path uses and the public-API fallback give the same
    bytes, both ways."""
    internal, public = _cipher_contexts(internal=True), _cipher_contexts(internal=False)
    padded = data + bytes(-len(data) % 16)
    outputs = []
    for new_encryptor, new_decryptor in (internal, public):
        encryptor = new_encryptor(key, iv)
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        decryptor = new_decryptor(key, iv)
        assert decryptor.update(ciphertext) + decryptor.finalize() == padded
        outputs.append(ciphertext)
    assert outputs[0] == outputs[1]


def test_hmac_key_repr_hides_the_key() -> None:
    key = bytes(range(32))
    assert key.hex() not in repr(HmacKey(key))


@pytest.mark.parametrize("ciphertext", [b"", bytes(15), bytes(17)])
def test_cbc_refuses_partial_blocks(ciphertext: bytes) -> None:
    with pytest.raises(InvalidMessageError, match="AES blocks"):
        cbc_decrypt(bytes(32), bytes(16), ciphertext)


@pytest.mark.parametrize("last_block", [bytes(16), bytes(15) + b"\x11", bytes(14) + b"\x01\x02"])
def test_cbc_refuses_bad_padding(last_block: bytes) -> None:
    key, iv = bytes(range(32)), bytes(16)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(last_block) + encryptor.finalize()
    with pytest.raises(InvalidMessageError, match="padding"):
        cbc_decrypt(key, iv, ciphertext)
