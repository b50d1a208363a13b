"""The client's SQLite store: atomic transactions, schema versioning, every table's round trip."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from client.store import SCHEMA_VERSION, Store, StoreError, StoreFormatError


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "client.db")
    yield store
    store.close()


def test_a_transaction_commits_everything_or_nothing(tmp_path, store):
    store.create_account("alice", 1, b"identity-record")
    with pytest.raises(RuntimeError), store.transaction():
        store.put_session("bob", 1, b"session-v1")
        store.add_message("in", "bob", 1, "m1", 5, b"hello")
        store.mark_processed("bob", 1, "m1", 5)
        raise RuntimeError("crash before commit")
    assert store.session("bob", 1) is None
    assert store.history() == []
    assert not store.is_processed("bob", 1, "m1")

    with store.transaction():
        store.put_session("bob", 1, b"session-v1")
        store.add_message("in", "bob", 1, "m1", 5, b"hello")
        store.mark_processed("bob", 1, "m1", 5)
    store.close()
    reopened = Store(tmp_path / "client.db")
    assert reopened.session("bob", 1) == b"session-v1"
    assert [m.body for m in reopened.history("bob")] == [b"hello"]
    assert reopened.is_processed("bob", 1, "m1")
    assert reopened.account().name == "alice"
    reopened.close()


def test_nested_transactions_join_the_outer_one(store):
    with pytest.raises(ValueError), store.transaction():
        with store.transaction():
            store.put_session("bob", 1, b"inner")
        raise ValueError
    assert store.session("bob", 1) is None


def test_the_account_is_created_once(store):
    store.create_account("alice", 1, b"x")
    with pytest.raises(StoreError):
        store.create_account("mallory", 2, b"y")
    assert store.account().name == "alice"
    assert "x" not in repr(store.account()).replace("alice", "")


def test_a_file_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreFormatError):
        Store(path)


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreFormatError):
        Store(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreFormatError):
        Store(garbage)


def test_prekeys_and_signed_prekeys(store):
    assert [store.next_id("pre_key") for _ in range(3)] == [1, 2, 3]
    store.add_pre_keys([(1, b"a"), (2, b"b")])
    assert store.pending_pre_keys() == [(1, b"a"), (2, b"b")]
    store.mark_pre_keys_uploaded([1])
    assert store.pending_pre_keys() == [(2, b"b")]
    assert store.pre_key(1) == b"a"
    store.remove_pre_key(1)
    assert store.pre_key(1) is None
    assert store.count_pre_keys() == 1
    assert store.pre_key_ids() == [2]

    store.add_signed_pre_key(1, b"s1", created_at=100)
    store.mark_signed_pre_key_uploaded(1, now=100)
    store.add_signed_pre_key(2, b"s2", created_at=200)
    # Until the relay accepted the new one, the old one stays current.
    assert store.current_signed_pre_key()[0] == 2
    store.mark_signed_pre_key_uploaded(2, now=200)
    assert store.current_signed_pre_key() == (2, b"s2", 200, True)
    assert store.signed_pre_key(1) == b"s1"
    assert store.remove_signed_pre_keys_retired_before(150) == 0
    assert store.remove_signed_pre_keys_retired_before(201) == 1
    assert store.signed_pre_key(1) is None
    assert store.signed_pre_key_ids() == [2]


def test_contacts_outbox_held_and_history(store):
    store.add_contact("bob", b"\x05" + b"k" * 32, now=1)
    store.set_verified("bob", True)
    store.record_changed_identity("bob", b"\x05" + b"n" * 32)
    contact = store.contact("bob")
    assert contact.verified and contact.changed_identity_key == b"\x05" + b"n" * 32
    store.replace_identity("bob", b"\x05" + b"n" * 32, now=2)
    contact = store.contact("bob")
    assert not contact.verified and contact.changed_identity_key is None
    assert contact.identity_key == b"\x05" + b"n" * 32
    assert store.contacts() == [contact]

    store.add_outbox("bob", 1, "m1", 3, b"c1", 10)
    store.add_outbox("bob", 1, "m2", 2, b"c2", 11)
    assert [e.message_id for e in store.outbox()] == ["m1", "m2"]
    assert [e.message_id for e in store.outbox(after=store.outbox()[0].seq)] == ["m2"]
    assert [e.message_id for e in store.outbox(limit=1)] == ["m1"]
    store.remove_outbox(["m1"])
    assert store.outbox_size() == 1
    assert [e.message_id for e in store.outbox()] == ["m2"]

    store.hold("undecryptable", "bob", 1, "m9", 5, 2, b"junk", "DecodeError", 6)
    (held,) = store.held("undecryptable")
    assert held.body == b"junk" and held.sender == "bob"
    store.release_held(held.seq)
    assert store.held() == []

    for i in range(5):
        store.add_message("out", "bob" if i % 2 else "carol", 1, f"h{i}", i, b"%d" % i)
    assert [m.message_id for m in store.history("carol")] == ["h0", "h2", "h4"]
    assert [m.message_id for m in store.history(limit=2)] == ["h3", "h4"]
    assert store.forget_processed_before(10) == 0


def test_a_version_1_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.db"
    store = Store(path)
    store.create_account("alice", 1, b"identity-record")
    store.put_session("bob", 1, b"session")
    store.close()
    # What version 1 of the schema was: everything but the KEM prekeys, the failure column and the
    # device lists.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE kem_pre_keys")
    db.execute("ALTER TABLE messages DROP COLUMN failure")
    db.execute("DROP TABLE device_lists")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(path)
    assert store.session("bob", 1) == b"session" and store.account().name == "alice"
    store.add_kem_pre_keys([(1, b"kem-record", True)], created_at=5)
    assert store.current_kem_last_resort() == (1, False)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_a_version_4_file_gains_device_lists(tmp_path):
    path = tmp_path / "v4.db"
    store = Store(path)
    store.create_account("alice", 1, b"identity-record")
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE device_lists")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    store = Store(path)
    assert store.device_list("bob") is None
    store.put_device_list("bob", 3, b"signed")
    store.put_device_list("bob", 4, b"newer")
    assert store.device_list("bob") == b"newer" and store.device_lists() == [("bob", b"newer")]
    store.remove_device_list("bob")
    assert store.device_lists() == []
    store.close()


def test_kem_prekeys_one_time_and_last_resort(store):
    store.add_kem_pre_keys([(1, b"lr1", True), (2, b"k2", False), (3, b"k3", False)], created_at=10)
    assert store.pending_kem_pre_keys(last_resort=False) == [(2, b"k2"), (3, b"k3")]
    assert store.pending_kem_pre_keys(last_resort=True) == [(1, b"lr1")]
    store.mark_kem_pre_keys_uploaded([1, 2, 3], now=10)
    assert store.pending_kem_pre_keys(last_resort=False) == []
    assert store.kem_pre_key(2) == (b"k2", False) and store.kem_pre_key(1) == (b"lr1", True)
    # A new last-resort key retires the old one only once the relay has it.
    store.add_kem_pre_keys([(4, b"lr4", True)], created_at=20)
    assert store.current_kem_last_resort() == (4, False)
    assert store.remove_kem_pre_keys_retired_before(1_000) == 0
    store.mark_kem_pre_keys_uploaded([4], now=20)
    assert store.remove_kem_pre_keys_retired_before(15) == 0
    assert store.remove_kem_pre_keys_retired_before(21) == 1
    assert store.kem_pre_key_ids(last_resort=True) == [4]
    store.remove_kem_pre_key(2)
    assert store.kem_pre_key_ids(last_resort=False) == [3]
    store.mark_unregistered()
    assert store.pending_kem_pre_keys(last_resort=False) == [(3, b"k3")]


def test_a_version_2_file_gains_the_failure_column_and_keeps_its_history(tmp_path):
    path = tmp_path / "v2.db"
    store = Store(path)
    store.create_account("alice", 1, b"identity-record")
    store.add_message("out", "bob", 1, "m1", 10, b"hello")
    store.close()
    # What version 2 of the schema was: no record of why a sent message failed (and no kem column,
    # nor device lists).
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE messages DROP COLUMN failure")
    db.execute("ALTER TABLE kem_pre_keys DROP COLUMN kem")
    db.execute("DROP TABLE device_lists")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = Store(path)
    (message,) = store.history()
    assert (message.body, message.failure) == (b"hello", None)
    store.mark_failed("m1", "too_large")
    assert store.history()[0].failure == "too_large"
    assert store.last_recipient() == "bob"
    store.close()


def test_a_failure_is_recorded_on_sent_messages_only(store):
    store.add_message("in", "bob", 1, "same-id", 10, b"from bob")
    store.add_message("out", "bob", 1, "same-id", 11, b"to bob")
    store.mark_failed("same-id", "too_large")
    assert [(m.direction, m.failure) for m in store.history()] == [("in", None), ("out", "too_large")]


def test_the_last_recipient_is_whom_we_wrote_to_not_who_wrote_last(store):
    assert store.last_recipient() is None
    store.add_message("out", "bob", 1, "m1", 10, b"to bob")
    store.add_message("in", "mallory", 1, "m2", 11, b"from a stranger")
    assert store.last_recipient() == "bob"


def test_the_file_and_its_companions_are_private_to_their_owner(tmp_path):
    path = tmp_path / "private.db"
    store = Store(path)
    store.create_account("alice", 1, b"identity-record")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    store.close()
    assert {"private.db", "private.db-wal", "private.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}


def test_a_loose_file_from_an_older_version_is_tightened_when_opened(tmp_path):
    path = tmp_path / "loose.db"
    Store(path).close()
    os.chmod(path, 0o644)
    store = Store(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.close()


def test_a_version_3_file_keeps_its_mlkem_prekeys_as_such(tmp_path):
    path = tmp_path / "v3.db"
    store = Store(path)
    store.create_account("alice", 1, b"identity-record")
    store.close()
    # What version 3 of the schema was: KEM prekeys without the kem column (all ML-KEM-1024).
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE kem_pre_keys DROP COLUMN kem")
    db.execute("DROP TABLE device_lists")
    db.execute(
        "INSERT INTO kem_pre_keys (id, record, last_resort, created_at, uploaded) VALUES (7, x'51', 1, 5, 1)"
    )
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = Store(path)
    assert store.current_kem_last_resort() == (7, True)
    assert store.current_kem_last_resort(kem="kyber") is None
    assert store.kem_pre_key_ids(last_resort=True, kem="kyber") == []
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)
    db.close()


def test_kyber_and_mlkem_last_resort_keys_retire_only_their_own_kind(store):
    store.add_kem_pre_keys([(1, b"mlkem-lr", True)], created_at=10)
    store.add_kem_pre_keys([(2, b"kyber-lr", True), (3, b"kyber-1", False)], created_at=10, kem="kyber")
    store.mark_kem_pre_keys_uploaded([1, 2, 3], now=10)
    assert store.current_kem_last_resort() == (1, True)
    assert store.current_kem_last_resort(kem="kyber") == (2, True)
    assert store.pending_kem_pre_keys(last_resort=False, kem="kyber") == []
    # A new Kyber last-resort key retires the old Kyber one and leaves the ML-KEM one current.
    store.add_kem_pre_keys([(4, b"kyber-lr2", True)], created_at=20, kem="kyber")
    assert store.pending_kem_pre_keys(last_resort=True, kem="kyber") == [(4, b"kyber-lr2")]
    store.mark_kem_pre_keys_uploaded([4], now=20)
    assert store.current_kem_last_resort(kem="kyber") == (4, True)
    assert store.current_kem_last_resort() == (1, True)
    assert store.remove_kem_pre_keys_retired_before(21) == 1
    assert store.kem_pre_key_ids(last_resort=True) == [1]
    assert store.kem_pre_key_ids(last_resort=True, kem="kyber") == [4]
