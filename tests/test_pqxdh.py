"""PQXDH (e2e.pqxdh): both sides agree, the key schedule is the documented one, and every bad input
(bad or missing signatures, a tampered ciphertext, a wrong or spent KEM prekey, downgrades) is a
typed error or, where ML-KEM's implicit rejection hides it, a key the two sides do not share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from conftest import DeterministicRng
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e import fips203, pqxdh, x3dh
from e2e.errors import DowngradeError, InvalidKeyError, InvalidSignatureError
from e2e.explain import Event
from e2e.kem import KemCiphertext, KemKeyPair, encapsulate
from e2e.keys import KeyPair, Rng
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret


@dataclass
class Bob:
    """Bob's keys as his device keeps them; ``kem_one_time`` is consumed the way a store would."""

    identity: KeyPair
    signed_pre_key: KeyPair
    signed_pre_key_signature: bytes
    one_time: dict[int, KeyPair]
    kem_one_time: dict[int, KemKeyPair]
    kem_last_resort: tuple[int, KemKeyPair]
    kem_signatures: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def create(cls, rng: Rng) -> Bob:
        identity = KeyPair.generate(rng)
        signed_pre_key = KeyPair.generate(rng)
        bob = cls(
            identity=identity,
            signed_pre_key=signed_pre_key,
            signed_pre_key_signature=identity.sign(signed_pre_key.public_key.serialize(), rng),
            one_time={31: KeyPair.generate(rng)},
            kem_one_time={41: KemKeyPair.generate(rng), 42: KemKeyPair.generate(rng)},
            kem_last_resort=(900, KemKeyPair.generate(rng)),
        )
        for key_id, key_pair in [*bob.kem_one_time.items(), bob.kem_last_resort]:
            bob.kem_signatures[key_id] = identity.sign(key_pair.public_key.serialize(), rng)
        return bob

    def bundle(self, one_time: bool = True, kem_id: int | None = 41) -> PreKeyBundle:
        kem_key = None if kem_id is None else self.kem_key(kem_id)
        return PreKeyBundle(
            registration_id=1234,
            device_id=1,
            identity_key=self.identity.public_key,
            signed_pre_key_id=7,
            signed_pre_key=self.signed_pre_key.public_key,
            signed_pre_key_signature=self.signed_pre_key_signature,
            pre_key_id=31 if one_time else None,
            pre_key=self.one_time[31].public_key if one_time else None,
            kem_pre_key_id=kem_id,
            kem_pre_key=None if kem_key is None else kem_key.public_key,
            kem_pre_key_signature=None if kem_id is None else self.kem_signatures[kem_id],
        )

    def kem_key(self, kem_id: int | None) -> KemKeyPair | None:
        if kem_id == self.kem_last_resort[0]:
            return self.kem_last_resort[1]
        return None if kem_id is None else self.kem_one_time.get(kem_id)

    def respond(self, message: InitialMessage) -> SharedSecret:
        """Look keys up by the message's ids, respond, and spend the one-time keys on success."""
        secret = pqxdh.respond(
            self.identity,
            self.signed_pre_key,
            None if message.pre_key_id is None else self.one_time.get(message.pre_key_id),
            self.kem_key(message.kem_pre_key_id),
            message,
        )
        if message.pre_key_id is not None:
            del self.one_time[message.pre_key_id]
        if message.kem_pre_key_id in self.kem_one_time:
            del self.kem_one_time[message.kem_pre_key_id]
        return secret


def _same(first: SharedSecret, second: SharedSecret) -> bool:
    return (
        first.root_key == second.root_key
        and first.chain_key == second.chain_key
        and first.associated_data == second.associated_data
    )


@pytest.mark.parametrize("one_time", [True, False], ids=["with-OPK", "without-OPK"])
@pytest.mark.parametrize("kem_id", [41, 900], ids=["one-time-KEM", "last-resort-KEM"])
def test_both_sides_derive_the_same_secret(rng: Rng, one_time: bool, kem_id: int) -> None:
    bob = Bob.create(rng)
    alice = KeyPair.generate(rng)
    message, alice_secret = pqxdh.initiate(alice, bob.bundle(one_time, kem_id), rng)
    assert message.kem_pre_key_id == kem_id
    assert message.pre_key_id == (31 if one_time else None)
    assert message.kem_ciphertext is not None
    bob_secret = bob.respond(message)
    assert _same(alice_secret, bob_secret)
    assert alice_secret.associated_data == alice.public_key.serialize() + bob.identity.public_key.serialize()


def _expected_root_and_chain(bob: Bob, message: InitialMessage, kem_key: KemKeyPair) -> bytes:
    """The key schedule of the module docstring, computed with cryptography's primitives alone."""

    def dh(private: KeyPair, public: bytes) -> bytes:
        ours = X25519PrivateKey.from_private_bytes(private.private_key.serialize())
        return ours.exchange(X25519PublicKey.from_public_bytes(public))

    dh_outputs = [
        dh(bob.signed_pre_key, message.identity_key.raw),
        dh(bob.identity, message.base_key.raw),
        dh(bob.signed_pre_key, message.base_key.raw),
    ]
    if message.pre_key_id is not None:
        dh_outputs.append(dh(bob.one_time[message.pre_key_id], message.base_key.raw))
    assert message.kem_ciphertext is not None
    openssl_key = MLKEM1024PrivateKey.from_seed_bytes(kem_key.private_key.serialize())
    shared_secret = openssl_key.decapsulate(message.kem_ciphertext.raw)
    encoded_kem_key = b"\x0a" + openssl_key.public_key().public_bytes_raw()
    ikm = b"\xff" * 32 + b"".join(dh_outputs) + shared_secret + encoded_kem_key
    info = b"e2e-relay_PQXDH_CURVE25519_SHA-256_ML-KEM-1024"
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=b"\x00" * 32, info=info).derive(ikm)


@pytest.mark.parametrize("one_time", [True, False])
def test_the_key_schedule_is_the_documented_one(rng: Rng, one_time: bool) -> None:
    bob = Bob.create(rng)
    message, secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(one_time, 42), rng)
    expected = _expected_root_and_chain(bob, message, bob.kem_one_time[42])
    assert secret.root_key.key == expected[:32]
    assert secret.chain_key.key == expected[32:]
    assert secret.chain_key.index == 0


def test_pqxdh_and_x3dh_secrets_differ_for_the_same_dh_values(rng: Rng) -> None:
    """Same EC keys and base key: the KEM secret, the bound KEM key and the info all change SK."""
    bob = Bob.create(rng)
    alice = KeyPair.generate(rng)
    _, pq_secret = pqxdh.initiate(alice, bob.bundle(), DeterministicRng(b"same"))
    _, ec_secret = x3dh.initiate(alice, replace(bob.bundle(), **_NO_KEM), DeterministicRng(b"same"))
    assert pq_secret.root_key != ec_secret.root_key


_NO_KEM: dict[str, None] = {"kem_pre_key_id": None, "kem_pre_key": None, "kem_pre_key_signature": None}


def test_pinned_randomness_reproduces_every_byte(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = KeyPair.generate(rng)
    runs = [
        pqxdh.initiate(alice, bob.bundle(), DeterministicRng(b"base"), kem_rng=DeterministicRng(b"kem"))
        for _ in range(2)
    ]
    (first, first_secret), (second, second_secret) = runs
    assert first == second
    assert _same(first_secret, second_secret)
    assert first.kem_ciphertext is not None
    m = DeterministicRng(b"kem")(32)
    expected_secret, expected_ciphertext = fips203.encaps_internal(bob.kem_one_time[41].public_key.raw, m)
    assert first.kem_ciphertext.raw == expected_ciphertext
    assert bob.kem_one_time[41].decapsulate(first.kem_ciphertext) == expected_secret
    assert _same(bob.respond(first), first_secret)
    # Without pinning, OpenSSL draws fresh randomness: a new ciphertext, a new secret.
    third, third_secret = pqxdh.initiate(alice, bob.bundle(False, 42), DeterministicRng(b"base"))
    assert third.kem_ciphertext != first.kem_ciphertext
    assert not _same(third_secret, first_secret)


def test_a_tampered_kem_ciphertext_gives_bob_a_different_key_not_an_error(rng: Rng) -> None:
    """ML-KEM's implicit rejection: decapsulation succeeds with an unrelated secret, so the
    tampering shows only when the first message's MAC fails (see test_session_pqxdh)."""
    bob = Bob.create(rng)
    message, alice_secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(), rng)
    assert message.kem_ciphertext is not None
    tampered_bytes = bytearray(message.kem_ciphertext.raw)
    tampered_bytes[100] ^= 0x40
    tampered = replace(message, kem_ciphertext=KemCiphertext(bytes(tampered_bytes)))
    bob_secret = bob.respond(tampered)
    assert bob_secret.root_key != alice_secret.root_key
    assert bob_secret.chain_key != alice_secret.chain_key


def test_a_ciphertext_for_another_kem_key_gives_a_different_key(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, alice_secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(kem_id=41), rng)
    foreign, _ = encapsulate(bob.kem_one_time[42].public_key)
    assert not _same(bob.respond(replace(message, kem_ciphertext=foreign)), alice_secret)


def test_a_wrong_kem_prekey_id_that_names_another_key_gives_a_different_key(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, alice_secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(kem_id=41), rng)
    for other_id in (42, 900):
        secret = pqxdh.respond(
            bob.identity, bob.signed_pre_key, bob.one_time[31], bob.kem_key(other_id), message
        )
        assert not _same(secret, alice_secret)


def test_a_wrong_kem_prekey_id_that_names_nothing_is_a_typed_error(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, _ = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(kem_id=41), rng)
    before = (dict(bob.one_time), dict(bob.kem_one_time))
    with pytest.raises(InvalidKeyError, match="KEM prekey 4141 is not available"):
        bob.respond(replace(message, kem_pre_key_id=4141))
    assert (bob.one_time, bob.kem_one_time) == before


def test_a_reused_one_time_kem_prekey_is_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = bob.bundle(one_time=False, kem_id=41)
    first, _ = pqxdh.initiate(KeyPair.generate(rng), bundle, rng)
    bob.respond(first)
    assert 41 not in bob.kem_one_time
    # A second session from the same bundle (a replay, or a relay that handed it out twice).
    second, _ = pqxdh.initiate(KeyPair.generate(rng), bundle, rng)
    with pytest.raises(InvalidKeyError, match="already used"):
        bob.respond(second)
    with pytest.raises(InvalidKeyError, match="already used"):
        bob.respond(first)


def test_the_last_resort_kem_prekey_serves_many_sessions(rng: Rng) -> None:
    bob = Bob.create(rng)
    secrets = []
    for _ in range(3):
        message, alice_secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(False, 900), rng)
        bob_secret = bob.respond(message)
        assert _same(alice_secret, bob_secret)
        secrets.append(bob_secret.root_key.key)
    assert len(set(secrets)) == 3


def test_a_missing_kem_signature_is_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = replace(bob.bundle(), kem_pre_key_signature=None)
    with pytest.raises(InvalidSignatureError, match="no signature"):
        pqxdh.initiate(KeyPair.generate(rng), bundle, rng)


def test_invalid_kem_signatures_are_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = bob.bundle(kem_id=41)
    mallory = KeyPair.generate(rng)
    forged_key = KemKeyPair.generate(rng).public_key
    bad_bundles = {
        # A signature by someone else over the right key.
        "wrong signer": replace(
            bundle, kem_pre_key_signature=mallory.sign(bundle.kem_pre_key.serialize(), rng)
        ),
        # Bob's genuine signature over another of his KEM prekeys.
        "other key's signature": replace(bundle, kem_pre_key_signature=bob.kem_signatures[42]),
        # A substituted key under Bob's genuine signature.
        "substituted key": replace(bundle, kem_pre_key=forged_key),
        # The signed EC prekey's signature presented for the KEM prekey (key confusion).
        "EC signature": replace(bundle, kem_pre_key_signature=bob.signed_pre_key_signature),
        "flipped bit": replace(
            bundle, kem_pre_key_signature=bytes([bob.kem_signatures[41][0] ^ 1]) + bob.kem_signatures[41][1:]
        ),
        "short": replace(bundle, kem_pre_key_signature=bob.kem_signatures[41][:63]),
    }
    for name, bad in bad_bundles.items():
        with pytest.raises(InvalidSignatureError):
            pqxdh.initiate(KeyPair.generate(rng), bad, rng)
        assert bad != bundle, name


def test_a_bad_signed_prekey_signature_is_still_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = replace(bob.bundle(), signed_pre_key_signature=bob.kem_signatures[41])
    with pytest.raises(InvalidSignatureError):
        pqxdh.initiate(KeyPair.generate(rng), bundle, rng)


def test_x3dh_refuses_a_bundle_that_advertises_a_kem_prekey(rng: Rng) -> None:
    bob = Bob.create(rng)
    with pytest.raises(DowngradeError):
        x3dh.initiate(KeyPair.generate(rng), bob.bundle(), rng)


def test_x3dh_refuses_to_answer_a_pqxdh_message(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, _ = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(), rng)
    with pytest.raises(DowngradeError):
        x3dh.respond(bob.identity, bob.signed_pre_key, bob.one_time[31], message)


def test_pqxdh_refuses_to_answer_an_x3dh_message(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, _ = x3dh.initiate(KeyPair.generate(rng), replace(bob.bundle(), **_NO_KEM), rng)
    with pytest.raises(DowngradeError):
        pqxdh.respond(bob.identity, bob.signed_pre_key, bob.one_time[31], bob.kem_key(41), message)


def test_stripping_the_kem_fields_from_alices_message_breaks_the_key(rng: Rng) -> None:
    """An attacker who strips the ciphertext so that Bob runs X3DH gets Bob a key Alice lacks."""
    bob = Bob.create(rng)
    message, alice_secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(), rng)
    stripped = replace(message, kem_pre_key_id=None, kem_ciphertext=None)
    bob_secret = x3dh.respond(bob.identity, bob.signed_pre_key, bob.one_time[31], stripped)
    assert not _same(bob_secret, alice_secret)


def test_pqxdh_needs_a_kem_prekey(rng: Rng) -> None:
    bob = Bob.create(rng)
    with pytest.raises(InvalidKeyError, match="KEM prekey"):
        pqxdh.initiate(KeyPair.generate(rng), bob.bundle(kem_id=None), rng)


def test_incomplete_kem_fields_are_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = bob.bundle()
    with pytest.raises(InvalidKeyError):
        replace(bundle, kem_pre_key_id=None)
    with pytest.raises(InvalidKeyError):
        replace(bundle, kem_pre_key=None)
    with pytest.raises(InvalidKeyError):
        replace(bundle, kem_pre_key_id=None, kem_pre_key=None)
    message, _ = pqxdh.initiate(KeyPair.generate(rng), bundle, rng)
    with pytest.raises(InvalidKeyError):
        replace(message, kem_pre_key_id=None)
    with pytest.raises(InvalidKeyError):
        replace(message, kem_ciphertext=None)


def test_a_missing_one_time_ec_prekey_is_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    message, _ = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(), rng)
    with pytest.raises(InvalidKeyError, match="one-time prekey"):
        pqxdh.respond(bob.identity, bob.signed_pre_key, None, bob.kem_key(41), message)
    assert 41 in bob.kem_one_time and 31 in bob.one_time


def test_tracing_reports_the_kem_step_and_changes_nothing(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = KeyPair.generate(rng)
    events: list[Event] = []
    traced = pqxdh.initiate(
        alice, bob.bundle(), DeterministicRng(b"t"), events.append, kem_rng=DeterministicRng(b"m")
    )
    plain = pqxdh.initiate(alice, bob.bundle(), DeterministicRng(b"t"), kem_rng=DeterministicRng(b"m"))
    assert traced[0] == plain[0] and _same(traced[1], plain[1])
    steps = [event.step for event in events]
    assert steps == [
        "x3dh.bundle_verified",
        "x3dh.base_key",
        "x3dh.dh",
        "x3dh.dh",
        "x3dh.dh",
        "x3dh.dh",
        "pqxdh.kem",
        "pqxdh.kdf",
    ]
    kem_event = events[6]
    assert kem_event.public["kem_pre_key_id"] == 41
    shared_secret = kem_event.secret["shared_secret"]
    for event in events:
        assert all(shared_secret.hex() not in str(value) for value in event.public.values())
    assert shared_secret.hex() not in repr(kem_event)
    bob_events: list[Event] = []
    pqxdh.respond(
        bob.identity, bob.signed_pre_key, bob.one_time[31], bob.kem_key(41), traced[0], bob_events.append
    )
    assert [e.secret["shared_secret"] for e in bob_events if e.step == "pqxdh.kem"] == [shared_secret]


def test_the_shared_secret_repr_is_redacted(rng: Rng) -> None:
    bob = Bob.create(rng)
    _, secret = pqxdh.initiate(KeyPair.generate(rng), bob.bundle(), rng)
    assert secret.root_key.key.hex() not in repr(secret)
    assert "redacted" in repr(secret)


def test_the_published_pqxdh_vectors_hold_under_independent_primitives() -> None:
    """tests/vectors/pqxdh.json recomputed with OpenSSL's X25519, ML-KEM and HKDF (through
    cryptography) and the FIPS 203 encapsulation checked against the NIST-format known answers:
    none of e2e's agreement code is involved."""
    document = json.loads((Path(__file__).parent / "vectors" / "pqxdh.json").read_text(encoding="utf-8"))
    assert document["kind"] == "pqxdh" and len(document["cases"]) == 2
    for case in document["cases"]:
        inputs, expected = case["inputs"], case["expected"]

        def x25519(private_hex: str, public_hex: str) -> bytes:
            private = X25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
            return private.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)[1:]))

        kem_key = MLKEM1024PrivateKey.from_seed_bytes(bytes.fromhex(inputs["bob_kem_pre_key_seed"]))
        encoded_kem_key = b"\x0a" + kem_key.public_key().public_bytes_raw()
        assert expected["bob_kem_pre_key_public"] == encoded_kem_key.hex()
        ciphertext = bytes.fromhex(expected["initial_message"]["kem_ciphertext"])
        assert ciphertext[0] == 0x0A
        shared_secret = kem_key.decapsulate(ciphertext[1:])
        assert expected["kem_shared_secret"] == shared_secret.hex()
        assert fips203.encaps_internal(
            encoded_kem_key[1:], bytes.fromhex(inputs["kem_encapsulation_random"])
        ) == (
            shared_secret,
            ciphertext[1:],
        )
        base_public = expected["alice_base_public"]
        dh = [
            x25519(inputs["bob_signed_pre_key_private"], expected["alice_identity_public"]),
            x25519(inputs["bob_identity_private"], base_public),
            x25519(inputs["bob_signed_pre_key_private"], base_public),
        ]
        if "bob_one_time_pre_key_private" in inputs:
            dh.append(x25519(inputs["bob_one_time_pre_key_private"], base_public))
        assert [expected[f"dh{i}"] for i in range(1, len(dh) + 1)] == [value.hex() for value in dh]
        assert ("dh4" in expected) == (len(dh) == 4)
        ikm = b"\xff" * 32 + b"".join(dh) + shared_secret + encoded_kem_key
        info = b"e2e-relay_PQXDH_CURVE25519_SHA-256_ML-KEM-1024"
        derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"\x00" * 32, info=info).derive(ikm)
        assert expected["root_key"] == expected["bob_root_key"] == derived[:32].hex()
        assert expected["chain_key"] == expected["bob_chain_key"] == derived[32:].hex()
        assert expected["initial_message"]["kem_pre_key_id"] == inputs["kem_pre_key_id"]
