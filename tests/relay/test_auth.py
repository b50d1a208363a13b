"""Registration and authentication: proofs of possession bound to one challenge, one relay, one key."""

from __future__ import annotations

import asyncio
import base64

import pytest

from client.transport import (
    AUTH_LABEL,
    REGISTER_LABEL,
    Connection,
    ConnectionLost,
    RelayError,
    proof_transcript,
)
from e2e.keys import KeyPair
from tests.relay.conftest import Device


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def expect_refusal(future, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await future
    assert caught.value.code == code, caught.value
    return caught.value


async def test_register_then_authenticate_on_a_new_connection(relay, rng):
    alice = Device("alice", 1, rng)
    first = await alice.register(relay.url)
    await first.ping()
    await first.close()
    second = await alice.connect(relay.url)
    counts = await second.prekey_counts()
    assert counts.pre_keys == 0 and counts.signed_pre_key_id is None
    await second.close()


async def test_register_is_idempotent_for_the_same_key(relay, rng):
    alice = Device("alice", 1, rng)
    for _ in range(2):
        connection = await alice.register(relay.url)
        await connection.close()


async def test_a_proof_replayed_on_another_connection_fails(relay, rng):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    first = await Connection.open(relay.url)
    signature = alice.identity.sign(
        proof_transcript(AUTH_LABEL, first.challenge, "alice", 1, first.origin), rng
    )
    await first.request("auth", account="alice", device_id=1, signature=b64(signature))
    second = await Connection.open(relay.url)
    assert second.challenge != first.challenge
    await expect_refusal(
        second.submit("auth", account="alice", device_id=1, signature=b64(signature)), "bad_proof"
    )
    lost = await second.wait_closed()
    assert lost.code == 4001
    await first.ping()  # the honest connection is untouched
    await first.close()


async def test_a_registration_proof_replayed_on_another_connection_fails(relay, rng):
    mallory_sees = await Connection.open(relay.url)
    alice = Device("alice", 1, rng)
    transcript = proof_transcript(REGISTER_LABEL, mallory_sees.challenge, "alice", 1, mallory_sees.origin)
    frame = {
        "account": "alice",
        "device_id": 1,
        "identity_key": b64(alice.identity.public_key.serialize()),
        "registration_id": 7,
        "signature": b64(alice.identity.sign(transcript, rng)),
    }
    other = await Connection.open(relay.url)
    await expect_refusal(other.submit("register", **frame), "bad_proof")
    assert (await other.wait_closed()).code == 4001
    # Nothing was registered: authenticating as alice finds no device.
    probe = await Connection.open(relay.url)
    await expect_refusal(probe.authenticate("alice", 1, alice.identity, rng), "unknown_device")
    await mallory_sees.close()


async def test_an_auth_proof_is_not_a_registration_proof(relay, rng):
    """The two labels keep a signature made for one purpose from serving the other."""
    alice = Device("alice", 1, rng)
    connection = await Connection.open(relay.url)
    transcript = proof_transcript(AUTH_LABEL, connection.challenge, "alice", 1, connection.origin)
    await expect_refusal(
        connection.submit(
            "register",
            account="alice",
            device_id=1,
            identity_key=b64(alice.identity.public_key.serialize()),
            registration_id=1,
            signature=b64(alice.identity.sign(transcript, rng)),
        ),
        "bad_proof",
    )


async def test_a_stale_challenge_closes_the_connection(relay_factory, rng):
    relay = await relay_factory(auth_timeout=0.3)
    connection = await Connection.open(relay.url)
    lost = await asyncio.wait_for(connection.wait_closed(), 5)
    assert lost.code == 4002


async def test_a_proof_over_a_stale_challenge_is_refused(relay_factory, rng):
    now = [1_000_000.0]
    relay = await relay_factory(clock=lambda: now[0])
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    connection = await Connection.open(relay.url)
    now[0] += relay.limits.auth_timeout + 1
    await expect_refusal(connection.authenticate("alice", 1, alice.identity, rng), "challenge_expired")
    assert (await connection.wait_closed()).code == 4002


async def test_the_wrong_key_is_refused(relay, rng):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    connection = await Connection.open(relay.url)
    await expect_refusal(connection.authenticate("alice", 1, KeyPair.generate(rng), rng), "bad_proof")
    assert (await connection.wait_closed()).code == 4001


async def test_a_proof_for_another_relay_is_refused(relay, rng):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    connection = await Connection.open(relay.url, origin="wss://relay.example:443")
    await expect_refusal(connection.authenticate("alice", 1, alice.identity, rng), "bad_proof")


async def test_a_registered_account_keeps_its_identity_key(relay, rng):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    impostor = Device("alice", 1, rng)
    connection = await Connection.open(relay.url)
    await expect_refusal(connection.register("alice", 1, impostor.identity, 1, rng), "identity_mismatch")
    assert (await connection.wait_closed()).code == 4001


@pytest.mark.parametrize("share_key", [False, True])
async def test_a_further_device_cannot_register_itself(relay, rng, share_key):
    """Further devices are linked by the primary (docs/devices.md); even the primary's own key
    does not let a new device id register."""
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    second = Device("alice", 2, rng)
    if share_key:
        second.identity = alice.identity
    connection = await Connection.open(relay.url)
    await expect_refusal(connection.register("alice", 2, second.identity, 1, rng), "not_linked")
    assert (await connection.wait_closed()).code == 4001


async def test_unknown_device_is_refused(relay, rng):
    connection = await Connection.open(relay.url)
    await expect_refusal(connection.authenticate("nobody", 1, KeyPair.generate(rng), rng), "unknown_device")


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("upload_prekeys", {"pre_keys": []}),
        ("prekey_count", {}),
        ("get_bundle", {"account": "alice"}),
        ("get_signed_pre_key", {"account": "alice", "device_id": 1, "key_id": 1}),
        ("send", {"to": {"account": "alice", "device_id": 1}, "client_id": "x", "type": 1, "body": "AA=="}),
        ("ack", {"server_ids": [1]}),
    ],
)
async def test_operations_before_authentication_are_refused(relay, rng, op, fields):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    connection = await Connection.open(relay.url)
    await expect_refusal(connection.submit(op, **fields), "unauthenticated")
    # The connection stays usable: the device may still authenticate on it.
    await connection.authenticate("alice", 1, alice.identity, rng)
    await connection.ping()
    await connection.close()


async def test_one_proof_per_connection(relay, rng):
    alice = Device("alice", 1, rng)
    connection = await alice.register(relay.url)
    await expect_refusal(connection.authenticate("alice", 1, alice.identity, rng), "already_authenticated")
    await connection.ping()
    await connection.close()


async def test_a_new_connection_displaces_the_old(relay, rng):
    alice = Device("alice", 1, rng)
    old = await alice.register(relay.url)
    new = await alice.connect(relay.url)
    lost = await asyncio.wait_for(old.wait_closed(), 5)
    assert lost.code == 4003
    with pytest.raises(ConnectionLost):
        await old.ping()
    await new.ping()
    await new.close()
