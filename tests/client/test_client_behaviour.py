"""The client's behaviour at the edges: duplicates, changed identity keys, bad input from the relay,
what the relay's database holds, prekey stock and rotation, reconnection with backoff."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from client import ClosedError, Hooks, IdentityChanged, Message, SendFailed, Settings, Undecryptable
from client.store import OutboxEntry, Store
from client.transport import RelayError, connect
from e2e import records
from e2e.keys import KeyPair
from e2e.session import SessionRecord
from e2e.spqr import SpqrRatchetFactory
from e2e.wire import MessageType
from e2e.x3dh import PreKeyBundle
from tests.relay.conftest import Device

pytest_plugins = ["client_fixtures"]

DAY = 86400.0


async def connect_as(path, url: str, rng):
    """A bare relay connection authenticated as the device whose store is ``path``.

    The device's own client must be closed first (a new connection displaces the old one).
    """
    store = Store(path)
    account = store.account()
    identity_key, _registration_id = records.deserialize_identity(account.identity)
    store.close()
    return await connect(
        url, account=account.name, device_id=account.device_id, identity_key=identity_key, rng=rng
    )


def capture_outbox(captured: list[OutboxEntry], path) -> Hooks:
    """Hooks whose ``after_send_commit`` copies the outbox entry just committed (read from the file)."""

    def hook(message_id: str) -> None:
        store = Store(path)
        captured.extend(entry for entry in store.outbox() if entry.message_id == message_id)
        store.close()

    return Hooks(after_send_commit=hook)


async def started(client):
    await client.start()
    await client.wait_connected(timeout=10)
    return client


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_duplicate_deliveries_are_removed_by_message_id_and_by_the_ratchet(
    relay, make_client, tmp_path, rng
):
    captured: list[OutboxEntry] = []
    bob = await started(make_client(relay.url, "bob"))
    alice = make_client(relay.url, "alice", hooks=capture_outbox(captured, tmp_path / "alice.db"))
    await alice.start()
    first = await alice.send("bob", "once")
    assert (await bob.receive(timeout=10)).message_id == first
    await alice.flush(timeout=10)
    await alice.close()

    (entry,) = captured
    raw = await connect_as(tmp_path / "alice.db", relay.url, rng)
    # The same ciphertext again: once under its own client id (the relay answers with the first
    # copy's server id and stores nothing), once under a new id (the relay stores it, and Bob's
    # ratchet recognises a used message key), and once more under the new id.
    again = await raw.send_message("bob", 1, entry.message_id, entry.message_type, entry.body)
    assert again.duplicate
    assert not (await raw.send_message("bob", 1, "replayed", entry.message_type, entry.body)).duplicate
    assert (await raw.send_message("bob", 1, "replayed", entry.message_type, entry.body)).duplicate
    await raw.close()

    alice = await started(make_client(relay.url, "alice"))
    second = await alice.send("bob", "twice?")
    message = await bob.receive(timeout=10)
    assert message.message_id == second  # Nothing was shown for the replay.
    assert [m.body for m in bob.history("alice")] == [b"once", b"twice?"]
    assert bob.quarantined() == []


async def test_changed_identity_key_is_reported_and_only_accepted_explicitly(
    relay_factory, make_client, tmp_path
):
    first_relay = await relay_factory("first")
    alice = await started(make_client(first_relay.url, "alice"))
    bob = await started(make_client(first_relay.url, "bob"))
    await alice.send("bob", "hi")
    await bob.receive(timeout=10)
    old_key = bob.identity_key
    await alice.close()
    await bob.close()

    # Bob starts over with a new identity key (a new phone) on another relay, and Alice moves there
    # too: her client registers again, as the relay does not know her.
    second_relay = await relay_factory("second")
    new_bob = await started(make_client(second_relay.url, "bob", path=tmp_path / "new-bob.db"))
    alice = await started(make_client(second_relay.url, "alice"))
    await new_bob.send("alice", "it is me, with a new phone")
    event = await alice.receive(timeout=10)
    assert isinstance(event, IdentityChanged)
    assert (event.name, event.trusted_key, event.new_key) == ("bob", old_key, new_bob.identity_key)
    # Nothing was shown or stored as a message, and Alice sends nothing to the new key.
    assert [m.body for m in alice.history("bob")] == [b"hi"]
    with pytest.raises(IdentityChanged):
        await alice.send("bob", "who are you?")
    assert alice.store.outbox_size() == 0
    assert len(alice.store.held("identity_changed")) == 1

    # Alice compares the new safety number with Bob, then accepts the new key.
    assert str(alice.safety_number("bob", changed=True).displayable) == str(
        new_bob.safety_number("alice").displayable
    )
    assert str(alice.safety_number("bob").displayable) != str(new_bob.safety_number("alice").displayable)
    await alice.accept_identity("bob")
    message = await alice.receive(timeout=10)
    assert isinstance(message, Message) and message.text == "it is me, with a new phone"
    assert not alice.is_verified("bob") and alice.store.held() == []
    await alice.send("bob", "welcome back")
    assert (await new_bob.receive(timeout=10)).text == "welcome back"


async def test_a_changed_key_in_a_fetched_bundle_raises_before_anything_is_sent(
    relay_factory, make_client, tmp_path
):
    first_relay = await relay_factory("first")
    async with make_client(first_relay.url, "bob") as bob:
        await bob.wait_connected(timeout=10)
        async with make_client(first_relay.url, "alice") as alice:
            await alice.send("bob", "hi")
            await bob.receive(timeout=10)
            old_key = bob.identity_key
    # Alice's session is gone (reset), and Bob's account now has another identity key.
    store = Store(tmp_path / "alice.db")
    store.remove_session("bob", 1)
    store.close()
    second_relay = await relay_factory("second")
    new_bob = await started(make_client(second_relay.url, "bob", path=tmp_path / "new-bob.db"))
    alice = await started(make_client(second_relay.url, "alice"))
    with pytest.raises(IdentityChanged) as raised:
        await alice.send("bob", "hello again")
    assert (raised.value.trusted_key, raised.value.new_key) == (old_key, new_bob.identity_key)
    assert alice.store.outbox_size() == 0 and alice.store.session("bob", 1) is None
    await alice.accept_identity("bob")
    await alice.send("bob", "hello again")
    assert (await new_bob.receive(timeout=10)).text == "hello again"


async def test_malformed_ciphertexts_are_quarantined_and_never_touch_the_session(
    relay, make_client, tmp_path, rng
):
    bob = await started(make_client(relay.url, "bob"))
    captured: list[OutboxEntry] = []
    alice = make_client(relay.url, "alice", hooks=capture_outbox(captured, tmp_path / "alice.db"))
    await alice.start()
    await alice.send("bob", "first")
    await bob.receive(timeout=10)
    await bob.send("alice", "reply")  # Alice's next messages are WhisperMessages.
    await alice.receive(timeout=10)
    await alice.send("bob", "second")
    await bob.receive(timeout=10)
    await alice.flush(timeout=10)
    await alice.close()
    before = bob.store.session("alice", 1)

    mallory = Device("mallory", 1, rng)
    junk = await mallory.register(relay.url)
    for message_type, body in [
        (MessageType.WHISPER, b"\x33garbage"),
        (MessageType.PREKEY, b"\x33\x00\x01\x02"),
        (7, b"an unknown type"),
        (MessageType.WHISPER, b"\x33"),
    ]:
        await junk.send("bob", 1, f"junk-{message_type}-{len(body)}", message_type, body)
    # An empty body never reaches Bob: the relay refuses it.
    with pytest.raises(RelayError) as refused:
        await junk.send("bob", 1, "junk-empty", MessageType.WHISPER, b"")
    assert refused.value.code == "bad_request"
    await junk.close()
    # A genuine next WhisperMessage from a copy of Alice's session, with one byte of its MAC
    # flipped; and Alice's last ciphertext cut short.  Both sent as Alice.
    store = Store(tmp_path / "alice.db")
    session = SessionRecord.deserialize(store.session("bob", 1), pq_ratchet_factory=SpqrRatchetFactory())
    store.close()
    forged = session.encrypt(b"\x01" + bytes(24) + b"forged", rng)
    assert forged.type == MessageType.WHISPER
    tampered = forged.body[:-1] + bytes([forged.body[-1] ^ 1])
    raw = await connect_as(tmp_path / "alice.db", relay.url, rng)
    await raw.send("bob", 1, "tampered", MessageType.WHISPER, tampered)
    await raw.send("bob", 1, "truncated", MessageType.WHISPER, captured[-1].body[:20])
    await raw.close()

    events = [await bob.receive(timeout=10) for _ in range(6)]
    assert all(isinstance(event, Undecryptable) for event in events)
    assert [(e.sender, e.message_id) for e in events[-2:]] == [("alice", "tampered"), ("alice", "truncated")]
    assert {e.error for e in events} <= {"DecodeError", "InvalidMessageError", "NoSessionError"}
    assert events[-2].error == "InvalidMessageError"
    quarantined = bob.quarantined()
    assert [q.message_id for q in quarantined][-2:] == ["tampered", "truncated"]
    assert quarantined[-2].body == tampered
    assert bob.store.session("alice", 1) == before  # Not a bit of the session changed.

    alice = await started(make_client(relay.url, "alice"))
    await alice.send("bob", "still in step")
    assert (await bob.receive(timeout=10)).text == "still in step"
    await bob.send("alice", "yes")
    assert (await alice.receive(timeout=10)).text == "yes"


async def test_the_relay_database_holds_no_plaintext_and_no_private_key(relay, make_client, tmp_path):
    alice = await started(make_client(relay.url, "alice"))
    bob = await started(make_client(relay.url, "bob"))
    secrets = []
    for client in (alice, bob):
        account = client.store.account()
        identity_key, _ = records.deserialize_identity(account.identity)
        secrets.append(identity_key.private_key.serialize())
        for pre_key_id in client.store.pre_key_ids():
            record = records.PreKeyRecord.deserialize(client.store.pre_key(pre_key_id))
            secrets.append(record.key_pair.private_key.serialize())
        kem_ids = [
            key_id
            for kem in ("mlkem", "kyber")
            for last_resort in (False, True)
            for key_id in client.store.kem_pre_key_ids(last_resort, kem=kem)
        ]
        assert kem_ids
        for kem_id in kem_ids:
            data = client.store.kem_pre_key(kem_id)[0]
            kind = records.KyberPreKeyRecord if data[:1] == b"Y" else records.KemPreKeyRecord
            record = kind.deserialize(data)
            secrets.append(record.key_pair.private_key.serialize())
        for signed_id in client.store.signed_pre_key_ids():
            record = records.SignedPreKeyRecord.deserialize(client.store.signed_pre_key(signed_id))
            secrets.append(record.key_pair.private_key.serialize())
    assert len(secrets) >= 2 * (1 + 12 + 1 + 4 + 1)

    plaintexts = []
    for turn in range(5):
        text = f"plaintext marker {turn} from alice, not for the relay"
        plaintexts.append(text.encode())
        await alice.send("bob", text)
        await bob.receive(timeout=10)
        reply = f"plaintext marker {turn} from bob, not for the relay"
        plaintexts.append(reply.encode())
        await bob.send("alice", reply)
        await alice.receive(timeout=10)
    # Bob goes offline so that some ciphertexts stay queued in the relay's database.
    await bob.close()
    for turn in range(3):
        text = f"queued plaintext marker {turn}"
        plaintexts.append(text.encode())
        await alice.send("bob", text)
    await alice.flush(timeout=10)

    files = [path for path in tmp_path.iterdir() if path.name.startswith("relay.db")]
    assert {path.name for path in files} >= {"relay.db", "relay.db-wal"}
    raw = b"".join(path.read_bytes() for path in files)
    assert len(raw) > 10_000
    for plaintext in plaintexts:
        assert plaintext not in raw
    for secret in secrets:
        assert secret not in raw
    # The check can fail: the clients' own stores hold exactly these bytes.
    own = (tmp_path / "alice.db").read_bytes() + (tmp_path / "alice.db-wal").read_bytes()
    assert plaintexts[0] in own and secrets[0] in own


async def test_prekeys_are_topped_up_on_the_relays_low_stock_notice(relay, make_client, rng):
    bob = await started(make_client(relay.url, "bob"))
    assert bob.store.count_pre_keys() == 12
    fetcher = Device("fetcher", 1, rng)
    connection = await fetcher.register(relay.url)
    # The relay's low-water mark is 10: three claims leave 9 and bring its notice.
    claimed = [(await connection.fetch_bundle("bob", 1)).pre_key_id for _ in range(3)]
    assert None not in claimed
    await until(lambda: bob.store.count_pre_keys() == 15)
    # The relay holds 12 again: twelve more fetches each get a one-time prekey nobody else got.
    more = [(await connection.fetch_bundle("bob", 1)).pre_key_id for _ in range(12)]
    assert None not in more and len(set(claimed + more)) == 15
    await connection.close()


async def test_signed_prekey_rotation_keeps_the_old_key_for_late_prekey_messages(relay, make_client):
    offset = 0.0

    def clock() -> float:
        return time.time() + offset

    async with make_client(relay.url, "bob", clock=clock) as bob:
        await bob.wait_connected(timeout=10)
        assert bob.store.signed_pre_key_ids() == [1]
    async with make_client(relay.url, "alice") as alice:
        await alice.send("bob", "built on signed prekey 1")
        await alice.flush(timeout=10)

    # A week and a day later Bob connects: he rotates first, then finds Alice's message.
    offset = 8 * DAY
    bob = await started(make_client(relay.url, "bob", clock=clock))
    assert bob.store.current_signed_pre_key()[0] == 2
    assert bob.store.signed_pre_key_ids() == [1, 2]
    assert (await bob.receive(timeout=10)).text == "built on signed prekey 1"
    await bob.close()

    # Past the grace period (14 days after retirement) the retired key is gone.
    offset = 23 * DAY
    bob = await started(make_client(relay.url, "bob", clock=clock))
    assert bob.store.signed_pre_key_ids() == [2, 3]
    assert await bob.rotate_signed_pre_key() == 4
    assert bob.store.signed_pre_key_ids() == [2, 3, 4]


async def test_reconnection_backs_off_with_jitter_up_to_the_cap(relay_factory, make_client, unused_tcp_port):
    port = unused_tcp_port
    delays: list[float] = []
    relay_up = asyncio.Event()

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 6:
            await relay_factory(port=port)
            relay_up.set()
        await asyncio.sleep(0)

    settings = Settings(pre_key_target=12, pre_key_low_water=4, backoff_base=0.1, backoff_cap=0.5)
    client = make_client(
        f"ws://127.0.0.1:{port}", "alice", settings=settings, sleep=sleep, jitter=lambda: 0.5
    )
    await client.start()
    await client.wait_connected(timeout=20)
    assert relay_up.is_set()
    # Half of min(cap, base * 2**n) each time: the jitter and the sleeping are the test's.
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.25, 0.25, 0.25])
    assert client.connections == 1


async def test_a_message_the_relay_refuses_for_good_is_reported_and_leaves_the_outbox(
    relay_factory, make_client
):
    # A relay stricter than the client expects (the client checks against 96 KiB).
    relay = await relay_factory(max_body_bytes=2000)
    bob = await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    too_large = await alice.send("bob", b"x" * 3000)
    event = await alice.receive(timeout=10)
    assert isinstance(event, SendFailed)
    assert (event.recipient, event.message_id, event.error) == ("bob", too_large, "too_large")
    await alice.flush(timeout=10)
    # The history says it failed, and why.
    (sent,) = alice.history("bob")
    assert (sent.message_id, sent.failure) == (too_large, "too_large")
    # The session goes on: Bob never saw that message's key, and skips it.
    await alice.send("bob", "a normal one")
    assert (await bob.receive(timeout=10)).text == "a normal one"


async def test_a_newer_connection_of_the_same_device_stops_the_client(relay, make_client, tmp_path, rng):
    alice = await started(make_client(relay.url, "alice"))
    intruder = await connect_as(tmp_path / "alice.db", relay.url, rng)
    with pytest.raises(ClosedError, match="displaced"):
        await alice.receive(timeout=10)
    with pytest.raises(ClosedError):
        await alice.send("bob", "anything")
    await intruder.close()


async def test_a_corrupt_local_session_stops_the_client_instead_of_quarantining(relay, make_client, tmp_path):
    bob = await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    await alice.send("bob", "one")
    await bob.receive(timeout=10)
    await bob.close()
    store = Store(tmp_path / "bob.db")
    store.put_session("alice", 1, b"\x00 not a session record")
    store.close()
    await alice.send("bob", "two")
    await alice.flush(timeout=10)
    bob = await started(make_client(relay.url, "bob"))
    with pytest.raises(ClosedError, match="StoreFormatError"):
        await bob.receive(timeout=10)
    assert bob.quarantined() == [] and [m.body for m in bob.history("alice")] == [b"one"]


async def test_no_plaintext_or_private_key_in_logs_or_reprs(relay, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    alice = await started(make_client(relay.url, "alice"))
    bob = await started(make_client(relay.url, "bob"))
    await alice.send("bob", "log-secret-one")
    message = await bob.receive(timeout=10)
    await bob.send("alice", "log-secret-two")
    await alice.receive(timeout=10)
    await alice.flush(timeout=10)
    await bob.flush(timeout=10)
    private_keys = []
    for client in (alice, bob):
        identity_key, _ = records.deserialize_identity(client.store.account().identity)
        private_keys.append(identity_key.private_key.serialize())
    shown = caplog.text + repr(alice) + repr(bob) + repr(message) + repr(alice.store.account())
    assert caplog.records  # The clients and the relay did log.
    for secret in (b"log-secret-one", b"log-secret-two"):
        assert secret.decode() not in shown
    for key in private_keys:
        assert key.hex() not in shown and repr(key) not in shown


async def test_an_authentic_message_without_an_envelope_spends_its_key_and_is_quarantined(
    relay, make_client, tmp_path, rng
):
    bob = await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    await alice.send("bob", "hello")
    await bob.receive(timeout=10)
    await bob.send("alice", "hi")
    await alice.receive(timeout=10)
    # Alice answers, so that her stored state has no pending sending chain: a copy of a state that
    # is still to do the sending half of a DH ratchet step draws its own fresh ratchet key, which
    # the real client would never learn.
    await alice.send("bob", "ok")
    await bob.receive(timeout=10)
    await alice.flush(timeout=10)
    await alice.close()
    # Alice's own session encrypts something that is not a message envelope.
    store = Store(tmp_path / "alice.db")
    session = SessionRecord.deserialize(store.session("bob", 1), pq_ratchet_factory=SpqrRatchetFactory())
    odd = session.encrypt(b"no envelope here", rng)
    # The advanced state is Alice's from now on, as if her own client had sent it: a version-4
    # session runs SPQR, whose chain (like the Double Ratchet's) must not fork into two senders.
    store.put_session("bob", 1, session.serialize())
    store.close()
    before = bob.store.session("alice", 1)
    raw = await connect_as(tmp_path / "alice.db", relay.url, rng)
    await raw.send("bob", 1, "odd", odd.type, odd.body)
    await raw.close()

    event = await bob.receive(timeout=10)
    assert isinstance(event, Undecryptable) and event.error == "DecodeError"
    # The MAC verified and the key is spent: the session moved on, the content was refused.
    assert bob.store.session("alice", 1) != before
    assert [m.body for m in bob.history("alice")] == [b"hello", b"hi", b"ok"]
    assert bob.quarantined()[-1].message_id == "odd"
    # The conversation goes on after the next ratchet step.
    await bob.send("alice", "what was that?")
    alice = await started(make_client(relay.url, "alice"))
    assert (await alice.receive(timeout=10)).text == "what was that?"
    await alice.send("bob", "never mind")
    assert (await bob.receive(timeout=10)).text == "never mind"


async def test_a_name_taken_by_another_identity_stops_the_new_client(relay, make_client, tmp_path):
    await started(make_client(relay.url, "alice"))
    impostor = make_client(relay.url, "alice", path=tmp_path / "impostor.db")
    await impostor.start()
    with pytest.raises(ClosedError) as stopped:
        await impostor.wait_connected(timeout=10)
    assert isinstance(stopped.value.__cause__, RelayError)
    assert stopped.value.__cause__.code == "identity_mismatch"
    assert not impostor.store.account().registered


async def test_closing_wakes_a_send_that_waits_for_a_connection(make_client, unused_tcp_port):
    alice = make_client(f"ws://127.0.0.1:{unused_tcp_port}", "alice")  # No relay listens there.
    await alice.start()
    sending = asyncio.create_task(alice.send("bob", "hello?"))
    await asyncio.sleep(0.2)
    assert not sending.done()
    await alice.close()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(sending, 5)
    with pytest.raises(ClosedError):
        await alice.flush()


async def test_a_prekey_message_for_an_unknown_signed_prekey_is_quarantined(
    relay, make_client, tmp_path, rng
):
    bob = await started(make_client(relay.url, "bob"))
    # Mallory builds a bundle as if Bob had published signed prekey 999 (she signs it with Bob's
    # identity key, read from his file: the worst case), and sends a PreKey message built on it.
    store = Store(tmp_path / "bob.db")
    bob_identity, registration_id = records.deserialize_identity(store.account().identity)
    store.close()
    fake_signed = KeyPair.generate(rng)
    bundle = PreKeyBundle(
        registration_id=registration_id,
        device_id=1,
        identity_key=bob_identity.public_key,
        signed_pre_key_id=999,
        signed_pre_key=fake_signed.public_key,
        signed_pre_key_signature=bob_identity.sign(fake_signed.public_key.serialize(), rng),
    )
    mallory = Device("mallory", 1, rng)
    session = SessionRecord.initiate(mallory.identity, mallory.registration_id, bundle, rng)
    ciphertext = session.encrypt(b"\x01" + bytes(24) + b"hello", rng)
    assert ciphertext.type == MessageType.PREKEY
    connection = await mallory.register(relay.url)
    await connection.send("bob", 1, "stale", ciphertext.type, ciphertext.body)
    await connection.close()

    event = await bob.receive(timeout=10)
    assert isinstance(event, Undecryptable) and event.error == "UnknownPreKeyError"
    assert "signed prekey with id 999" in bob.quarantined()[-1].error
    # Nothing of Mallory was kept: no session, no contact.
    assert bob.store.session("mallory", 1) is None and bob.store.contact("mallory") is None


async def test_the_event_iterators_end_when_the_client_closes(relay, make_client):
    bob = await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    for text in ("one", "two", "three"):
        await alice.send("bob", text)

    async def read_all() -> list[str]:
        return [message.text async for message in bob.messages()]

    reader = asyncio.create_task(read_all())
    await until(lambda: len(bob.history("alice")) == 3)
    await asyncio.sleep(0.05)
    await bob.close()
    assert await asyncio.wait_for(reader, 5) == ["one", "two", "three"]
    assert [event async for event in bob.events()] == []


async def test_bundle_fetches_wait_when_the_relay_rate_limits_them(relay_factory, make_client):
    # One fetch per 0.25 s after a burst of two: slower than four version-4 session starts (a Kyber
    # encapsulation and SPQR's start each, a few ms), even on a loaded machine.
    relay = await relay_factory(bundle_burst=2, bundle_rate=4.0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    peers = [await started(make_client(relay.url, f"peer{i}")) for i in range(4)]
    alice = await started(make_client(relay.url, "alice", sleep=sleep))
    for peer in peers:
        await alice.send(peer.name, f"hello {peer.name}")
    for peer in peers:
        assert (await peer.receive(timeout=10)).text == f"hello {peer.name}"
    # After a burst of two, a fetch was refused at first, and retried after the relay's delay.
    assert waits and all(0 < wait <= 0.5 for wait in waits)


async def test_sending_to_an_unknown_account_raises_and_leaves_nothing(relay, make_client):
    alice = await started(make_client(relay.url, "alice"))
    with pytest.raises(RelayError) as refused:
        await alice.send("nobody", "hello?")
    assert refused.value.code in {"unknown_account", "unknown_device"}
    assert alice.store.contact("nobody") is None and alice.store.session("nobody", 1) is None
    assert alice.store.outbox_size() == 0 and alice.history() == []


async def test_messages_refused_for_a_full_queue_are_sent_again_later(relay_factory, make_client):
    relay = await relay_factory(max_queue_messages=3)
    async with make_client(relay.url, "bob") as bob:
        await bob.wait_connected(timeout=10)
    alice = await started(make_client(relay.url, "alice"))
    sent = [await alice.send("bob", f"message {i}") for i in range(5)]
    await until(lambda: alice.store.outbox_size() == 2)  # Three stored; two refused for now.
    await asyncio.sleep(0.3)
    assert alice.store.outbox_size() == 2  # Still waiting: Bob's queue is full.
    bob = await started(make_client(relay.url, "bob"))
    received = [await bob.receive(timeout=10) for _ in sent]
    await alice.flush(timeout=10)
    assert sorted(m.message_id for m in received) == sorted(sent)
    assert [m.message_id for m in received[:3]] == sent[:3]
