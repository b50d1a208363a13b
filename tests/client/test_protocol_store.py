"""The client's SQLite store as the core's store protocols: SessionCipher over two real files.

* a conversation between two SQLite stores through SessionBuilder and SessionCipher, with the
  one-time prekey deleted in the file once the first message decrypted;
* a failed decrypt leaves the file byte for byte as it was (every table dumped and compared);
* a transaction that rolls back after a successful decrypt leaves the file as it was too, and
  once the cache is forgotten the same message decrypts again: the receive path's crash-safety
  argument (docs/client.md) at the level of the store API;
* trust is per account, and a corrupt local record stops with StoreFormatError, not a core error.
"""

from __future__ import annotations

import pytest

from client.protocol_store import SqliteProtocolStore
from client.store import Store, StoreFormatError
from e2e import (
    Direction,
    DuplicateMessageError,
    InvalidMessageError,
    KeyPair,
    PreKeyRecord,
    ProtocolAddress,
    ProtocolStore,
    SessionBuilder,
    SessionCipher,
    SignedPreKeyRecord,
    UntrustedIdentityError,
    make_pre_key_bundle,
)
from e2e.ratchet import DEFAULT_LIMITS

ALICE, BOB = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)


def _device(tmp_path, name: str, rng) -> tuple[Store, SqliteProtocolStore]:
    store = Store(tmp_path / f"{name}.db")
    identity = KeyPair.generate(rng)
    protocol = SqliteProtocolStore(store, identity, 7, now_ms=lambda: 1_000, limits=DEFAULT_LIMITS)
    signed = KeyPair.generate(rng)
    protocol.store_signed_pre_key(
        SignedPreKeyRecord(1, signed, identity.sign(signed.public_key.serialize(), rng), 1_000)
    )
    protocol.store_pre_key(PreKeyRecord(5, KeyPair.generate(rng)))
    return store, protocol


def _dump(store: Store) -> list[str]:
    return list(store._db.iterdump())


@pytest.fixture
def pair(tmp_path, rng):
    alice_store, alice = _device(tmp_path, "alice", rng)
    bob_store, bob = _device(tmp_path, "bob", rng)
    bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, pre_key_id=5)
    SessionBuilder(alice, BOB).process_pre_key_bundle(bundle, rng)
    yield alice_store, alice, bob_store, bob
    alice_store.close()
    bob_store.close()


def test_a_conversation_over_two_sqlite_files(pair, rng):
    _, alice, bob_store, bob = pair
    typed: ProtocolStore = bob  # the adapter is a ProtocolStore
    to_bob, to_alice = SessionCipher(alice, BOB), SessionCipher(typed, ALICE)
    first = to_bob.encrypt(b"hello", rng)
    assert bob_store.pre_key(5) is not None
    with bob_store.transaction():
        assert to_alice.decrypt(first.body, first.type) == b"hello"
    assert bob_store.pre_key(5) is None
    assert bob_store.contact("alice").identity_key == alice.get_identity_key_pair().public_key.serialize()
    for number in range(3):
        reply = to_alice.encrypt(b"reply %d" % number, rng)
        assert to_bob.decrypt(reply) == b"reply %d" % number
    # A fresh adapter over the same file reads the stored sessions.
    reopened = SqliteProtocolStore(
        bob_store, bob.get_identity_key_pair(), 7, now_ms=lambda: 2_000, limits=DEFAULT_LIMITS
    )
    assert SessionCipher(reopened, ALICE).decrypt(to_bob.encrypt(b"later", rng)) == b"later"


def test_a_failed_decrypt_leaves_the_file_unchanged(pair, rng):
    _, alice, bob_store, bob = pair
    to_alice = SessionCipher(bob, ALICE)
    first = SessionCipher(alice, BOB).encrypt(b"hello", rng)
    damaged = first.body[:-10] + bytes([first.body[-10] ^ 1]) + first.body[-9:]
    before = _dump(bob_store)
    with pytest.raises(InvalidMessageError), bob_store.transaction():
        to_alice.decrypt(damaged, 3)
    assert _dump(bob_store) == before


def test_a_rolled_back_decrypt_decrypts_again_once_the_cache_is_forgotten(pair, rng):
    _, alice, bob_store, bob = pair
    to_alice = SessionCipher(bob, ALICE)
    first = SessionCipher(alice, BOB).encrypt(b"hello", rng)
    before = _dump(bob_store)

    class Crash(Exception):
        pass

    # The plaintext decrypted, then something after it in the same transaction failed.
    with pytest.raises(Crash), bob_store.transaction():
        assert to_alice.decrypt(first) == b"hello"
        raise Crash
    assert _dump(bob_store) == before
    # The cached record ran ahead of the file (the contract of e2e.stores): the client drops it.
    with pytest.raises(DuplicateMessageError):
        to_alice.decrypt(first)
    bob.forget()
    assert to_alice.decrypt(first) == b"hello"
    assert bob_store.pre_key(5) is None


def test_trust_is_per_account(pair, rng):
    _, alice, _, bob = pair
    key = alice.get_identity_key_pair().public_key
    bob.check_trusted_identity(ProtocolAddress("alice", 2), key, Direction.RECEIVING)
    assert bob.save_identity(ProtocolAddress("alice", 2), key) is False
    assert bob.get_identity(ProtocolAddress("alice", 3)) == key
    with pytest.raises(UntrustedIdentityError) as raised:
        bob.check_trusted_identity(
            ProtocolAddress("alice", 3), KeyPair.generate(rng).public_key, Direction.SENDING
        )
    assert raised.value.address == ProtocolAddress("alice", 3)


def test_a_corrupt_local_record_is_a_store_error(pair, rng):
    _, alice, bob_store, bob = pair
    first = SessionCipher(alice, BOB).encrypt(b"hello", rng)
    bob_store._db.execute("UPDATE pre_keys SET record = ? WHERE id = 5", (b"P\x01garbage",))
    with pytest.raises(StoreFormatError):
        SessionCipher(bob, ALICE).decrypt(first)
    assert "private" not in repr(
        bob
    ) and bob.get_identity_key_pair().private_key.serialize().hex() not in repr(bob)


def test_a_rolled_back_first_use_is_forgotten_with_the_cache(pair, rng):
    _, _, bob_store, bob = pair
    carol = ProtocolAddress("carol", 1)
    key = KeyPair.generate(rng).public_key
    with pytest.raises(RuntimeError), bob_store.transaction():
        bob.save_identity(carol, key)
        assert bob.get_identity(carol) == key
        raise RuntimeError("after the first use, before the commit")
    assert bob_store.contact("carol") is None
    bob.forget("carol")
    assert bob.get_identity(carol) is None
    other = KeyPair.generate(rng).public_key
    bob.check_trusted_identity(carol, other, Direction.RECEIVING)
