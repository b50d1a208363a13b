"""X3DH: libsignal's published session vector, both sides agreeing with and without a one-time
prekey, and every way the handshake must refuse its input."""

from __future__ import annotations

import pytest

from e2e.errors import InvalidKeyError, InvalidSignatureError
from e2e.explain import Event
from e2e.kdf import kdf_x3dh
from e2e.keys import KeyPair, PrivateKey, PublicKey
from e2e.x3dh import InitialMessage, PreKeyBundle, initiate, respond

# libsignal rust/protocol/tests/ratchet.rs at commit a280bc6555fcd3c93f566bb9cee5c2c27baa1ca9
# ("Resolve an age-old X3DH test inconsistency"): test_ratcheting_session_as_alice / _as_bob.
ALICE_IDENTITY_PRIVATE = "9040f0d4e09cf38f6dc7c13779c908c015a1da4fa78737a080eb0a6f4f5f8f58"
ALICE_IDENTITY_PUBLIC = "05b4a8455660ada65b401007f615e654041746432e3339c6875149bceefcb42b4a"
ALICE_BASE_PRIVATE = "10ae7c64d1e61cd596b76a0db5012673391cae66edbfcf073b4da80516a47449"
ALICE_BASE_PUBLIC = "05e2c05860f2ac6b2b57ba564b421ffe71e4b128c591e46e0491cc9b33dbf22a27"
BOB_IDENTITY_PRIVATE = "4875cc69ddf8ea0719ec947d61081135868d5fd801f02c0225e516df2156605e"
BOB_IDENTITY_PUBLIC = "05f1f43874f6966956c2dd473f8fa15adeb71d1cb991b2341692324cefb1c5e626"
BOB_SIGNED_PRE_KEY_PRIVATE = "583900131fb727998b7803fe6ac22cc591f342e4e42a8c8d5d78194209b8d253"
BOB_SIGNED_PRE_KEY_PUBLIC = "05ac248a8f263be6863576eb0362e28c828f0107a3379d34bab1586bf8c770cd67"
EXPECTED_CHAIN_KEY = "ab9be50e5cb22a925446ab90ee5670545f4fd32902459ec274b6ad0ae5d6031a"

# The same test before that commit (its parent a280bc65^, and the copies in libsignal-protocol-java
# and python-axolotl's tests/ratchet/test_ratchetingsession.py) used this unclamped base private
# key with a public key that does not belong to it once clamped; Bob's side, given that public
# key, expected another sending chain key.
OLD_ALICE_BASE_PRIVATE = "11ae7c64d1e61cd596b76a0db5012673391cae66edbfcf073b4da80516a47449"
OLD_ALICE_BASE_PUBLIC = "05472d1fb1a9862c3af6beaca8920277e2b26f4a79213ec7c906aeb35e03cf8950"
OLD_EXPECTED_SENDER_CHAIN = "9797caca53c989bbe229a40ca7727010eb2604fc14945d77958a0aeda088b44d"

LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


def _key(private_hex: str) -> KeyPair:
    return KeyPair(PrivateKey(bytes.fromhex(private_hex)))


def _fixed(data: bytes):
    """An rng that hands out ``data`` and refuses to be called again."""
    calls = []

    def rng(n: int) -> bytes:
        assert not calls, "the rng was called twice"
        calls.append(n)
        assert n == len(data)
        return data

    rng.calls = calls  # type: ignore[attr-defined]
    return rng


def _bundle(
    identity: KeyPair,
    signed_pre_key: KeyPair,
    rng,
    one_time: KeyPair | None = None,
    signature: bytes | None = None,
) -> PreKeyBundle:
    return PreKeyBundle(
        registration_id=1234,
        device_id=1,
        identity_key=identity.public_key,
        signed_pre_key_id=7,
        signed_pre_key=signed_pre_key.public_key,
        signed_pre_key_signature=signature or identity.sign(signed_pre_key.public_key.serialize(), rng),
        pre_key_id=None if one_time is None else 31,
        pre_key=None if one_time is None else one_time.public_key,
    )


def test_libsignal_published_vector(rng) -> None:
    alice_identity = _key(ALICE_IDENTITY_PRIVATE)
    bob_identity = _key(BOB_IDENTITY_PRIVATE)
    bob_signed = _key(BOB_SIGNED_PRE_KEY_PRIVATE)
    assert alice_identity.public_key.serialize().hex() == ALICE_IDENTITY_PUBLIC
    assert bob_identity.public_key.serialize().hex() == BOB_IDENTITY_PUBLIC
    assert bob_signed.public_key.serialize().hex() == BOB_SIGNED_PRE_KEY_PUBLIC

    # libsignal's test has no bundle; the signature over the signed prekey is ours to make.
    bundle = _bundle(bob_identity, bob_signed, rng)
    message, alice_secret = initiate(alice_identity, bundle, _fixed(bytes.fromhex(ALICE_BASE_PRIVATE)))
    assert message.base_key.serialize().hex() == ALICE_BASE_PUBLIC
    assert message.identity_key == alice_identity.public_key
    assert (message.signed_pre_key_id, message.pre_key_id) == (7, None)
    assert alice_secret.chain_key.key.hex() == EXPECTED_CHAIN_KEY
    assert alice_secret.chain_key.index == 0

    bob_secret = respond(bob_identity, bob_signed, None, message)
    assert bob_secret.chain_key.key.hex() == EXPECTED_CHAIN_KEY
    assert bob_secret.root_key == alice_secret.root_key
    assert alice_secret.associated_data == bytes.fromhex(ALICE_IDENTITY_PUBLIC + BOB_IDENTITY_PUBLIC)
    assert bob_secret.associated_data == alice_secret.associated_data


def test_the_older_copies_used_an_unclamped_base_key() -> None:
    # Clamping 11ae… gives 10ae…, whose public key is the new one; the old public key is another.
    old = PrivateKey(bytes.fromhex(OLD_ALICE_BASE_PRIVATE))
    assert old.serialize().hex() == ALICE_BASE_PRIVATE
    assert old.public_key().serialize().hex() == ALICE_BASE_PUBLIC != OLD_ALICE_BASE_PUBLIC


def test_the_older_bob_side_vector() -> None:
    # Bob's side only needs Alice's public keys, so the older vector still holds for it.
    message = InitialMessage(
        PublicKey.deserialize(bytes.fromhex(ALICE_IDENTITY_PUBLIC)),
        PublicKey.deserialize(bytes.fromhex(OLD_ALICE_BASE_PUBLIC)),
        signed_pre_key_id=1,
    )
    secret = respond(_key(BOB_IDENTITY_PRIVATE), _key(BOB_SIGNED_PRE_KEY_PRIVATE), None, message)
    assert secret.chain_key.key.hex() == OLD_EXPECTED_SENDER_CHAIN


def test_dh_values_and_kdf_as_specified(rng) -> None:
    alice, bob, bob_signed, bob_one_time = (KeyPair.generate(rng) for _ in range(4))
    events: list[Event] = []
    base = rng(32)
    message, secret = initiate(
        alice, _bundle(bob, bob_signed, rng, bob_one_time), _fixed(base), events.append
    )
    base_key = KeyPair(PrivateKey(base))
    assert message.base_key == base_key.public_key
    expected = [
        alice.agree(bob_signed.public_key),
        base_key.agree(bob.public_key),
        base_key.agree(bob_signed.public_key),
        base_key.agree(bob_one_time.public_key),
    ]
    traced = [event.secret["output"] for event in events if event.step == "x3dh.dh"]
    assert traced == expected
    assert [event.public["name"] for event in events if event.step == "x3dh.dh"] == [
        "DH1",
        "DH2",
        "DH3",
        "DH4",
    ]
    root_key, chain_key = kdf_x3dh(b"".join(expected))
    assert (secret.root_key, secret.chain_key) == (root_key, chain_key)


def test_with_one_time_prekey_both_sides_agree(rng) -> None:
    alice, bob, bob_signed, bob_one_time = (KeyPair.generate(rng) for _ in range(4))
    message, alice_secret = initiate(alice, _bundle(bob, bob_signed, rng, bob_one_time), rng)
    assert message.pre_key_id == 31
    bob_secret = respond(bob, bob_signed, bob_one_time, message)
    assert bob_secret.root_key == alice_secret.root_key
    assert bob_secret.chain_key == alice_secret.chain_key
    # Without DH4 the same keys would give another secret.
    without = respond(bob, bob_signed, None, InitialMessage(message.identity_key, message.base_key, 7))
    assert without.root_key != alice_secret.root_key


def test_tracing_changes_nothing(rng) -> None:
    alice, bob, bob_signed = (KeyPair.generate(rng) for _ in range(3))
    bundle = _bundle(bob, bob_signed, rng)
    base = rng(32)
    events: list[Event] = []
    traced = initiate(alice, bundle, _fixed(base), events.append)
    plain = initiate(alice, bundle, _fixed(base))
    assert traced[0] == plain[0]
    assert traced[1].root_key == plain[1].root_key
    assert [event.step for event in events] == [
        "x3dh.bundle_verified",
        "x3dh.base_key",
        "x3dh.dh",
        "x3dh.dh",
        "x3dh.dh",
        "x3dh.kdf",
    ]
    # Events print secrets only as digests.
    for event in events:
        for value in event.secret.values():
            assert value.hex() not in repr(event)


def test_shared_secret_repr_is_redacted(rng) -> None:
    alice, bob, bob_signed = (KeyPair.generate(rng) for _ in range(3))
    _, secret = initiate(alice, _bundle(bob, bob_signed, rng), rng)
    assert secret.root_key.key.hex() not in repr(secret)
    assert secret.chain_key.key.hex() not in str(secret)


def test_bad_signature_is_refused_before_any_key_is_drawn(rng) -> None:
    alice, bob, bob_signed, mallory = (KeyPair.generate(rng) for _ in range(4))
    good = bob.sign(bob_signed.public_key.serialize(), rng)
    for signature in (
        bytes((good[0] ^ 1,)) + good[1:],
        good[:-1] + bytes((good[-1] ^ 0x80,)),
        mallory.sign(bob_signed.public_key.serialize(), rng),  # signed by someone else
        bob.sign(bob_signed.public_key.raw, rng),  # over the key without its type byte
        bytes(64),
    ):
        never = _fixed(b"")
        with pytest.raises(InvalidSignatureError):
            initiate(alice, _bundle(bob, bob_signed, rng, signature=signature), never)
        assert never.calls == []  # type: ignore[attr-defined]


def test_substituted_signed_prekey_is_refused(rng) -> None:
    alice, bob, bob_signed, mallory_signed = (KeyPair.generate(rng) for _ in range(4))
    signature = bob.sign(bob_signed.public_key.serialize(), rng)
    with pytest.raises(InvalidSignatureError):
        initiate(alice, _bundle(bob, mallory_signed, rng, signature=signature), rng)


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p.hex()[:6])
def test_low_order_bundle_keys_are_refused(point: bytes, rng) -> None:
    alice, bob, bob_signed = (KeyPair.generate(rng) for _ in range(3))
    low = PublicKey(point)
    # A correctly signed low-order signed prekey.
    signed_low = PreKeyBundle(1, 1, bob.public_key, 7, low, bob.sign(low.serialize(), rng))
    with pytest.raises(InvalidKeyError):
        initiate(alice, signed_low, rng)
    # A low-order one-time prekey (it is not signed in X3DH).
    one_time_low = PreKeyBundle(
        1,
        1,
        bob.public_key,
        7,
        bob_signed.public_key,
        bob.sign(bob_signed.public_key.serialize(), rng),
        3,
        low,
    )
    with pytest.raises(InvalidKeyError):
        initiate(alice, one_time_low, rng)


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p.hex()[:6])
def test_low_order_initial_message_keys_are_refused(point: bytes, rng) -> None:
    alice, bob, bob_signed, bob_one_time = (KeyPair.generate(rng) for _ in range(4))
    message, _ = initiate(alice, _bundle(bob, bob_signed, rng, bob_one_time), rng)
    low = PublicKey(point)
    for forged in (
        InitialMessage(low, message.base_key, 7, 31),
        InitialMessage(message.identity_key, low, 7, 31),
    ):
        with pytest.raises(InvalidKeyError):
            respond(bob, bob_signed, bob_one_time, forged)


def test_mismatched_one_time_prekey(rng) -> None:
    alice, bob, bob_signed, bob_one_time, other = (KeyPair.generate(rng) for _ in range(5))
    with_one_time, alice_secret = initiate(alice, _bundle(bob, bob_signed, rng, bob_one_time), rng)
    without_one_time, _ = initiate(alice, _bundle(bob, bob_signed, rng), rng)
    # The message names a one-time prekey but Bob has none to give, or the other way round.
    with pytest.raises(InvalidKeyError):
        respond(bob, bob_signed, None, with_one_time)
    with pytest.raises(InvalidKeyError):
        respond(bob, bob_signed, bob_one_time, without_one_time)
    # The wrong one-time prekey cannot be detected here; it yields another secret, which the
    # first message's MAC then refuses.
    assert respond(bob, bob_signed, other, with_one_time).root_key != alice_secret.root_key


def test_bundle_needs_both_one_time_id_and_key(rng) -> None:
    bob, bob_signed, one_time = (KeyPair.generate(rng) for _ in range(3))
    signature = bob.sign(bob_signed.public_key.serialize(), rng)
    with pytest.raises(InvalidKeyError):
        PreKeyBundle(1, 1, bob.public_key, 7, bob_signed.public_key, signature, pre_key_id=3)
    with pytest.raises(InvalidKeyError):
        PreKeyBundle(1, 1, bob.public_key, 7, bob_signed.public_key, signature, pre_key=one_time.public_key)
