"""What the client refuses before it encrypts: text that is not Unicode, bodies the relay could not take.

Through a real relay on loopback with its default limits and real SQLite files.
"""

from __future__ import annotations

import pytest

from client.errors import MessageTooLargeError, TextEncodingError
from client.settings import Settings
from server import Limits

pytest_plugins = ["client_fixtures"]


async def started(client):
    await client.start()
    await client.wait_connected(10)
    return client


def _snapshot(client, peer: str) -> tuple[object, ...]:
    store = client.store
    return (store.session(peer, 1), store.history(), store.outbox(), store.contact(peer))


async def test_the_largest_message_fits_the_relays_default_limit_as_a_first_pqxdh_message(relay, make_client):
    assert Settings().max_body_bytes == Limits().max_body_bytes
    bob = await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    largest = b"\xff" * alice.max_message_bytes
    message_id = await alice.send("bob", largest)
    (entry,) = alice.store.outbox()
    # The worst case: a PreKeySignalMessage carrying a 1,568-byte ML-KEM ciphertext.
    assert entry.message_type == 3 and len(entry.body) > 1568 + len(largest)
    assert len(entry.body) <= Limits().max_body_bytes
    await alice.flush(timeout=10)
    received = await bob.receive(timeout=10)
    assert (received.message_id, received.body) == (message_id, largest)


async def test_one_byte_more_is_refused_before_anything_is_encrypted_or_stored(relay, make_client):
    await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    await alice.send("bob", "first")
    await alice.flush(timeout=10)
    before = _snapshot(alice, "bob")
    with pytest.raises(MessageTooLargeError) as refused:
        await alice.send("bob", b"x" * (alice.max_message_bytes + 1))
    assert (refused.value.size, refused.value.limit) == (alice.max_message_bytes + 1, alice.max_message_bytes)
    # A 120,000-character line is refused at once, whatever it holds.
    with pytest.raises(MessageTooLargeError):
        await alice.send("bob", "é" * 120_000)
    assert _snapshot(alice, "bob") == before


async def test_text_that_is_not_unicode_is_refused_and_changes_nothing(relay, make_client):
    await started(make_client(relay.url, "bob"))
    alice = await started(make_client(relay.url, "alice"))
    await alice.send("bob", "first")
    await alice.flush(timeout=10)
    before = _snapshot(alice, "bob")
    with pytest.raises(TextEncodingError) as refused:
        await alice.send("bob", "pasted \udcff\udcfe bytes")
    assert refused.value.position == 7
    assert isinstance(refused.value, ValueError)
    assert _snapshot(alice, "bob") == before


async def test_add_contact_starts_the_session_and_refuses_an_account_that_does_not_exist(relay, make_client):
    from client.transport import RelayError

    await started(make_client(relay.url, "bob"))
    await started(
        make_client(
            relay.url, "carol", settings=Settings(publish_kem_pre_keys=False, publish_kyber_pre_keys=False)
        )
    )
    alice = await started(make_client(relay.url, "alice"))
    with pytest.raises(RelayError) as refused:
        await alice.add_contact("nobody")
    assert refused.value.code == "unknown_account"
    assert alice.store.contact("nobody") is None and alice.store.session("nobody", 1) is None
    assert await alice.add_contact("bob") == "pqxdh_v4"
    assert await alice.add_contact("carol") == "x3dh"
    assert alice.has_session("bob") and alice.store.contact("bob") is not None
    # Adding again changes nothing and claims no second bundle.
    session = alice.store.session("bob", 1)
    assert await alice.add_contact("bob") == "pqxdh_v4"
    assert alice.store.session("bob", 1) == session
