"""The v3 KDFs: HKDF against RFC 5869, the ratchet KDFs against libsignal's published chain-key
vector and against an independent HKDF (``cryptography``'s), and key-type strictness."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from published_vectors import load_nist_vectors

from e2e.kdf import (
    MESSAGE_KEYS_INFO,
    ROOT_KEY_INFO,
    X3DH_DISCONTINUITY,
    X3DH_INFO,
    ChainKey,
    MessageKeys,
    RootKey,
    hkdf,
    kdf_x3dh,
)

HKDF_VECTORS = load_nist_vectors("KDF/rfc-5869-HKDF-SHA256.txt") + load_nist_vectors("KDF/hkdf-generated.txt")


def _reference_hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(SHA256(), length, salt, info).derive(ikm)


@pytest.mark.parametrize(
    "vector", HKDF_VECTORS, ids=["rfc5869-a1", "rfc5869-a2", "rfc5869-a3", "generated-1200"]
)
def test_hkdf_published_vectors(vector: dict[str, str]) -> None:
    assert vector["HASH"] == "SHA-256"
    okm = hkdf(
        bytes.fromhex(vector["SALT"]),
        bytes.fromhex(vector["IKM"]),
        bytes.fromhex(vector["INFO"]),
        int(vector["L"]),
    )
    assert okm.hex() == vector["OKM"]
    if "PRK" in vector:
        # The extract step on its own (RFC 5869 §2.2); an empty salt means HashLen zero bytes.
        salt = bytes.fromhex(vector["SALT"]) or bytes(32)
        assert hmac.digest(salt, bytes.fromhex(vector["IKM"]), "sha256").hex() == vector["PRK"]


def test_hkdf_output_lengths() -> None:
    for length in (1, 31, 32, 33, 64, 80, 255 * 32):
        assert hkdf(b"salt", b"ikm", b"info", length) == _reference_hkdf(b"salt", b"ikm", b"info", length)
    for length in (0, -1, 255 * 32 + 1):
        with pytest.raises(ValueError):
            hkdf(b"salt", b"ikm", b"info", length)


# libsignal rust/protocol/src/ratchet/keys.rs, test_chain_key_derivation (commit
# 5cf8b0d7179b30e2143109906b070d6e362c0139).
LIBSIGNAL_CHAIN_SEED = bytes.fromhex("8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f")
LIBSIGNAL_CIPHER_KEY = bytes.fromhex("bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217")
LIBSIGNAL_MAC_KEY = bytes.fromhex("c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b")
LIBSIGNAL_NEXT_CHAIN_KEY = bytes.fromhex("28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d")


def test_libsignal_chain_key_vector() -> None:
    chain_key = ChainKey(LIBSIGNAL_CHAIN_SEED, 0)
    keys = chain_key.message_keys()
    assert keys.cipher_key == LIBSIGNAL_CIPHER_KEY
    assert keys.mac_key == LIBSIGNAL_MAC_KEY
    assert keys.counter == 0
    assert chain_key.next().key == LIBSIGNAL_NEXT_CHAIN_KEY
    assert chain_key.next().index == 1
    assert chain_key.next().message_keys().counter == 1


def test_kdf_ck_against_its_definition(rng) -> None:
    chain_key = ChainKey(rng(32), 7)
    seed = hmac.digest(chain_key.key, b"\x01", "sha256")
    expanded = _reference_hkdf(bytes(32), seed, b"WhisperMessageKeys", 80)
    keys = chain_key.message_keys()
    assert (keys.cipher_key, keys.mac_key, keys.iv, keys.counter) == (
        expanded[:32],
        expanded[32:64],
        expanded[64:],
        7,
    )
    assert chain_key.next() == ChainKey(hmac.digest(chain_key.key, b"\x02", "sha256"), 8)


def test_kdf_rk_against_its_definition(rng) -> None:
    root_key, dh_out = RootKey(rng(32)), rng(32)
    expanded = _reference_hkdf(root_key.key, dh_out, b"WhisperRatchet", 64)
    new_root, chain = root_key.kdf_rk(dh_out)
    assert new_root == RootKey(expanded[:32])
    assert chain == ChainKey(expanded[32:], 0)


def test_kdf_x3dh_against_its_definition(rng) -> None:
    for count in (3, 4):
        dh_outputs = rng(32 * count)
        expanded = _reference_hkdf(bytes(32), b"\xff" * 32 + dh_outputs, b"WhisperText", 64)
        root_key, chain_key = kdf_x3dh(dh_outputs)
        assert root_key.key == expanded[:32]
        assert chain_key == ChainKey(expanded[32:], 0)


def test_constants_are_libsignals() -> None:
    assert ROOT_KEY_INFO == b"WhisperRatchet"
    assert MESSAGE_KEYS_INFO == b"WhisperMessageKeys"
    assert X3DH_INFO == b"WhisperText"
    assert X3DH_DISCONTINUITY == b"\xff" * 32


def test_chain_walks_forward(rng) -> None:
    chain_key = ChainKey(rng(32), 0)
    seen = set()
    for index in range(50):
        assert chain_key.index == index
        keys = chain_key.message_keys()
        seen.add(keys.cipher_key)
        chain_key = chain_key.next()
    assert len(seen) == 50


@pytest.mark.parametrize("key", [b"", b"\x00" * 31, b"\x00" * 33, bytearray(32)])
def test_key_types_check_their_length(key: bytes) -> None:
    with pytest.raises(ValueError):
        RootKey(key)
    with pytest.raises(ValueError):
        ChainKey(key, 0)
    with pytest.raises(ValueError):
        MessageKeys(key, bytes(32), bytes(16), 0)
    with pytest.raises(ValueError):
        MessageKeys(bytes(32), key, bytes(16), 0)


def test_bad_iv_and_index() -> None:
    with pytest.raises(ValueError):
        MessageKeys(bytes(32), bytes(32), bytes(15), 0)
    with pytest.raises(ValueError):
        ChainKey(bytes(32), -1)


def test_equality(rng) -> None:
    key = rng(32)
    assert RootKey(key) == RootKey(key)
    assert RootKey(key) != RootKey(rng(32))
    assert ChainKey(key, 1) == ChainKey(key, 1)
    assert ChainKey(key, 1) != ChainKey(key, 2)
    assert ChainKey(key, 0).message_keys() == ChainKey(key, 0).message_keys()
    assert ChainKey(key, 0).message_keys() != ChainKey(key, 0).next().message_keys()
    assert RootKey(key) != key


def test_secrets_never_appear_in_repr(rng) -> None:
    key = rng(32)
    keys = ChainKey(key, 3).message_keys()
    for value in (RootKey(key), ChainKey(key, 3), keys):
        shown = repr(value) + str(value) + f"{value}"
        assert "redacted" in shown
        for secret in (key, keys.cipher_key, keys.mac_key, keys.iv):
            assert secret.hex() not in shown
            assert repr(secret) not in shown
    assert "index=3" in repr(ChainKey(key, 3))
