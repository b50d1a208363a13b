"""Project Wycheproof's vectors, run through the project's own primitives.

The pinned files in ``tests/vectors/wycheproof/`` (their origin and SHA-256 in the README there)
are read as they are.  Every ``valid`` case must give Wycheproof's result; every ``invalid`` case
must be refused with the typed error the primitive documents:

* X25519 (``PrivateKey.agree``): the file has no invalid cases.  Its ``acceptable`` cases are
  public keys that are non-canonical, on the twist, or of low order.  Those whose shared secret is
  all zeros (the low-order points, flag ``ZeroSharedSecret``) must raise ``InvalidKeyError``, which
  ``agree`` documents and X3DH §4.7 asks for; every other acceptable case must give Wycheproof's
  shared secret, as a valid one does.
* Ed25519 (``verify_ed25519``): invalid signatures raise ``InvalidSignatureError``.
* HKDF-SHA256 (``e2e.kdf.hkdf``): a requested length above 255 × 32 bytes raises ``ValueError``.
* HMAC-SHA256 (``verify_hmac_sha256``, with ``hmac_sha256`` for the tag): a modified tag raises
  ``InvalidMessageError``.
* AES-CBC with PKCS#7 padding (``cbc_encrypt`` / ``cbc_decrypt``): bad padding raises
  ``InvalidMessageError``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from e2e.errors import InvalidKeyError, InvalidMessageError, InvalidSignatureError
from e2e.kdf import hkdf
from e2e.keys import PrivateKey, PublicKey, verify_ed25519
from e2e.primitives import cbc_decrypt, cbc_encrypt, hmac_sha256, verify_hmac_sha256

WYCHEPROOF = Path(__file__).parent / "vectors" / "wycheproof"
README = (WYCHEPROOF / "README.md").read_text(encoding="utf-8")
PINNED = dict(re.findall(r"\| `(\w+_test\.json)` \| `[0-9a-f]{40}` \| `([0-9a-f]{64})` \|", README))
# What each file holds, by result: these counts are part of what the suite pins.
COUNTS = {
    "x25519_test.json": {"valid": 264, "acceptable": 254},
    "ed25519_test.json": {"valid": 88, "invalid": 63},
    "hkdf_sha256_test.json": {"valid": 83, "invalid": 3},
    "hmac_sha256_test.json": {"valid": 66, "invalid": 108},
    "aes_cbc_pkcs5_test.json": {"valid": 72, "invalid": 144},
}


def _cases(name: str) -> list[tuple[dict, dict]]:
    data = (WYCHEPROOF / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == PINNED[name], f"{name} is not the pinned copy"
    document = json.loads(data)
    cases = [(group, test) for group in document["testGroups"] for test in group["tests"]]
    assert len(cases) == document["numberOfTests"]
    assert Counter(test["result"] for _, test in cases) == COUNTS[name]
    return cases


def _ids(cases: list[tuple[dict, dict]]) -> list[str]:
    return [f"tc{test['tcId']}-{test['result']}" for _, test in cases]


def test_every_pinned_file_is_listed_and_present() -> None:
    assert set(PINNED) == set(COUNTS) == {path.name for path in WYCHEPROOF.glob("*.json")}


X25519 = _cases("x25519_test.json")


@pytest.mark.parametrize(("group", "test"), X25519, ids=_ids(X25519))
def test_x25519(group: dict, test: dict) -> None:
    assert group["curve"] == "curve25519"
    private_key = PrivateKey(bytes.fromhex(test["private"]))
    public_key = PublicKey(bytes.fromhex(test["public"]))
    shared = bytes.fromhex(test["shared"])
    if shared == bytes(32):
        assert test["result"] == "acceptable" and "ZeroSharedSecret" in test["flags"]
        with pytest.raises(InvalidKeyError):
            private_key.agree(public_key)
    else:
        assert test["result"] in ("valid", "acceptable")
        assert private_key.agree(public_key) == shared


ED25519 = _cases("ed25519_test.json")


@pytest.mark.parametrize(("group", "test"), ED25519, ids=_ids(ED25519))
def test_ed25519(group: dict, test: dict) -> None:
    public_key = bytes.fromhex(group["publicKey"]["pk"])
    message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    if test["result"] == "valid":
        verify_ed25519(public_key, message, signature)
    else:
        with pytest.raises(InvalidSignatureError):
            verify_ed25519(public_key, message, signature)


HKDF = _cases("hkdf_sha256_test.json")


@pytest.mark.parametrize(("group", "test"), HKDF, ids=_ids(HKDF))
def test_hkdf_sha256(group: dict, test: dict) -> None:
    arguments = (bytes.fromhex(test["salt"]), bytes.fromhex(test["ikm"]), bytes.fromhex(test["info"]))
    if test["result"] == "valid":
        assert hkdf(*arguments, test["size"]).hex() == test["okm"]
    else:
        assert test["flags"] == ["SizeTooLarge"]
        with pytest.raises(ValueError, match="output length"):
            hkdf(*arguments, test["size"])


HMAC = _cases("hmac_sha256_test.json")


@pytest.mark.parametrize(("group", "test"), HMAC, ids=_ids(HMAC))
def test_hmac_sha256(group: dict, test: dict) -> None:
    key, message, tag = bytes.fromhex(test["key"]), bytes.fromhex(test["msg"]), bytes.fromhex(test["tag"])
    assert len(key) * 8 == group["keySize"] and len(tag) * 8 == group["tagSize"]
    if test["result"] == "valid":
        assert hmac_sha256(key, message)[: len(tag)] == tag
        verify_hmac_sha256(key, message, tag)
    else:
        with pytest.raises(InvalidMessageError):
            verify_hmac_sha256(key, message, tag)


AES_CBC = _cases("aes_cbc_pkcs5_test.json")


@pytest.mark.parametrize(("group", "test"), AES_CBC, ids=_ids(AES_CBC))
def test_aes_cbc_pkcs5(group: dict, test: dict) -> None:
    key, iv = bytes.fromhex(test["key"]), bytes.fromhex(test["iv"])
    message, ciphertext = bytes.fromhex(test["msg"]), bytes.fromhex(test["ct"])
    if test["result"] == "valid":
        assert cbc_encrypt(key, iv, message) == ciphertext
        assert cbc_decrypt(key, iv, ciphertext) == message
    else:
        with pytest.raises(InvalidMessageError):
            cbc_decrypt(key, iv, ciphertext)
