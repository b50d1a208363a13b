"""The prekey directory: signed uploads, exactly-once claims, low stock, rate limits, rotation, KEM keys."""

from __future__ import annotations

import asyncio
import base64

import pytest

from client.transport import Connection, PreKeysLow, RelayError
from e2e.kem import KemKeyPair
from e2e.keys import KeyPair
from e2e.kyber import KyberKeyPair, KyberPublicKey
from tests.relay.conftest import Device, collect, link


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def refused(awaitable, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value
    return caught.value


async def online(relay, device: Device) -> Connection:
    return await device.register(relay.url)


async def test_upload_count_and_claim_each_key_once(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    counts = await b.upload_prekeys(
        signed_pre_key=bob.signed_pre_key(7), one_time_pre_keys=bob.one_time_pre_keys(3)
    )
    assert (counts.pre_keys, counts.signed_pre_key_id) == (3, 7)
    alice = Device("alice", 1, rng)
    a = await online(relay, alice)
    claimed = []
    for _ in range(4):
        bundle = await a.fetch_bundle("bob", 1)
        bundle.verify()
        assert bundle.identity_key == bob.identity.public_key
        assert bundle.registration_id == bob.registration_id
        assert bundle.signed_pre_key_id == 7
        claimed.append(bundle.pre_key_id)
    assert claimed == [1, 2, 3, None]
    assert await b.prekey_count() == 0


async def test_many_fetchers_race_for_the_last_keys(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    await bob.publish(b, one_time=5)
    published = {1, 2, 3, 4, 5}
    fetchers = [await online(relay, Device(f"fetcher{i}", 1, rng)) for i in range(24)]
    bundles = await asyncio.gather(*(f.fetch_bundle("bob", 1) for f in fetchers))
    handed_out = [bundle.pre_key_id for bundle in bundles if bundle.pre_key_id is not None]
    assert sorted(handed_out) == sorted(published)
    assert sum(1 for bundle in bundles if bundle.pre_key is None) == len(fetchers) - len(published)
    assert await b.prekey_count() == 0


async def test_a_bundle_for_every_device_of_an_account(relay, rng):
    first = Device("bob", 1, rng)
    second = Device("bob", 2, rng)
    primary = await online(relay, first)
    await first.publish(primary, one_time=1)
    companion = await link(relay.url, primary, first, second)
    await second.publish(companion, one_time=1)
    await companion.close()
    await primary.close()
    alice = await online(relay, Device("alice", 1, rng))
    bundles = await alice.fetch_bundles("bob")
    assert [(b.device_id, b.pre_key_id) for b in bundles] == [(1, 1), (2, 1)]


async def test_a_bad_signed_prekey_signature_stores_nothing(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    key_id, key, signature = bob.signed_pre_key(1)
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    await refused(
        b.upload_prekeys(signed_pre_key=(key_id, key, forged), one_time_pre_keys=bob.one_time_pre_keys(5)),
        "invalid_signature",
    )
    counts = await b.prekey_counts()
    assert (counts.pre_keys, counts.signed_pre_key_id) == (0, None)
    alice = await online(relay, Device("alice", 1, rng))
    await refused(alice.fetch_bundle("bob", 1), "no_bundle")


async def test_a_prekey_signed_by_someone_elses_identity_is_refused(relay, rng):
    alice = Device("alice", 1, rng)
    a = await online(relay, alice)
    await alice.publish(a, one_time=2)
    mallory = Device("mallory", 1, rng)
    m = await online(relay, mallory)
    # Alice's own signed prekey, copied from her bundle, does not verify under Mallory's key; and the
    # upload cannot be aimed at Alice: the fields naming her are unknown to the op and ignored.
    bundle = await m.fetch_bundle("alice", 1)
    entry = {
        "id": 99,
        "public_key": b64(bundle.signed_pre_key.serialize()),
        "signature": b64(bundle.signed_pre_key_signature),
    }
    await refused(
        m.submit("upload_prekeys", account="alice", device_id=1, signed_pre_key=entry), "invalid_signature"
    )
    assert (await m.prekey_counts()).signed_pre_key_id is None
    counts = await a.prekey_counts()
    assert (counts.pre_keys, counts.signed_pre_key_id) == (1, 1)


async def test_upload_limits_and_conflicts_store_nothing(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    await bob.publish(b, one_time=2)
    await refused(b.upload_prekeys(one_time_pre_keys=bob.one_time_pre_keys(101)), "too_many_keys")
    repeated = bob.one_time_pre_keys(1) * 2
    await refused(b.upload_prekeys(one_time_pre_keys=repeated), "key_id_conflict")
    # One new key and one already stored: all or nothing.
    fresh = bob.one_time_pre_keys(1)
    await refused(
        b.upload_prekeys(one_time_pre_keys=[*fresh, (1, KeyPair.generate(rng).public_key)]), "key_id_conflict"
    )
    assert await b.prekey_count() == 2
    bad_key = {"id": 500, "public_key": b64(b"\x06" + bytes(32))}
    await refused(b.submit("upload_prekeys", pre_keys=[bad_key]), "invalid_key")
    await refused(
        b.submit("upload_prekeys", pre_keys=[{"id": -1, "public_key": bad_key["public_key"]}]), "bad_request"
    )
    assert await b.prekey_count() == 2


async def test_the_owner_hears_when_stock_runs_low(relay_factory, rng):
    relay = await relay_factory(prekey_low_water=3)
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    await bob.publish(b, one_time=4)
    alice = await online(relay, Device("alice", 1, rng))
    await alice.fetch_bundle("bob", 1)  # 3 left: not yet low
    await alice.fetch_bundle("bob", 1)  # 2 left: low
    pushes = await collect(b, until=lambda ps: any(isinstance(p, PreKeysLow) for p in ps))
    low = next(p for p in pushes if isinstance(p, PreKeysLow))
    assert (low.pre_keys, low.low_water) == (2, 3)
    # An offline owner hears it when it next connects.
    await b.close()
    b = await bob.connect(relay.url)
    pushes = await collect(b, until=lambda ps: any(isinstance(p, PreKeysLow) for p in ps))
    assert any(isinstance(p, PreKeysLow) and p.pre_keys == 2 for p in pushes)


async def test_bundle_fetches_are_rate_limited_per_requester(relay_factory, rng):
    relay = await relay_factory(bundle_burst=3, bundle_rate=0.01)
    bob = Device("bob", 1, rng)
    await bob.publish(await online(relay, bob), one_time=10)
    alice = await online(relay, Device("alice", 1, rng))
    for _ in range(3):
        await alice.fetch_bundle("bob", 1)
    error = await refused(alice.fetch_bundle("bob", 1), "rate_limited")
    assert error.details["retry_after"] > 0
    # Another requester has its own allowance, and the refused fetch claimed nothing.
    carol = await online(relay, Device("carol", 1, rng))
    assert (await carol.fetch_bundle("bob", 1)).pre_key_id == 4


async def test_rotation_keeps_the_previous_signed_prekey_for_the_grace_period(relay_factory, rng):
    now = [1_000_000.0]
    relay = await relay_factory(clock=lambda: now[0], signed_prekey_grace=100.0)
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    first = bob.signed_pre_key(1)
    await b.upload_prekeys(signed_pre_key=first)
    now[0] += 10
    assert (await b.upload_prekeys(signed_pre_key=bob.signed_pre_key(2))).signed_pre_key_id == 2
    alice = await online(relay, Device("alice", 1, rng))
    assert (await alice.fetch_bundle("bob", 1)).signed_pre_key_id == 2
    old = await alice.get_signed_pre_key("bob", 1, 1)
    assert old.public_key == first[1].serialize()
    bob.identity.public_key.verify(old.public_key, old.signature)
    now[0] += 101
    await refused(alice.get_signed_pre_key("bob", 1, 1), "not_found")
    assert (await alice.get_signed_pre_key("bob", 1, 2)).key_id == 2
    # Reusing the current key's id for another key is refused.
    await refused(b.upload_prekeys(signed_pre_key=bob.signed_pre_key(2)), "key_id_conflict")


async def test_kem_prekeys_are_claimed_once_then_the_last_resort(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)

    def signed_kem(key_id: int):
        key = KemKeyPair.generate(rng).public_key
        return (key_id, key, bob.identity.sign(key.serialize(), rng))

    last_resort = signed_kem(100)
    counts = await b.upload_prekeys(
        signed_pre_key=bob.signed_pre_key(1),
        one_time_pre_keys=bob.one_time_pre_keys(1),
        kem_pre_keys=[signed_kem(1), signed_kem(2)],
        kem_last_resort=last_resort,
    )
    assert (counts.kem_pre_keys, counts.kem_last_resort_id) == (2, 100)
    alice = await online(relay, Device("alice", 1, rng))
    ids = []
    for _ in range(4):
        bundle = await alice.fetch_bundle("bob", 1)
        bundle.verify()
        ids.append(bundle.kem_pre_key_id)
    assert ids == [1, 2, 100, 100]
    assert bundle.kem_pre_key == last_resort[1]
    raw = await alice.request("get_bundle", account="bob", device_id=1)
    assert raw["bundles"][0]["kem_pre_key"]["last_resort"] is True


async def test_kyber_prekeys_are_claimed_once_then_the_last_resort(relay, rng):
    """Kyber1024 prekeys (0x08, for version-4 sessions) beside ML-KEM ones, each kind claimed once."""
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)

    def signed(key_id: int, kind):
        key = kind.generate(rng).public_key
        return (key_id, key, bob.identity.sign(key.serialize(), rng))

    kyber_last_resort = signed(900, KyberKeyPair)
    counts = await b.upload_prekeys(
        signed_pre_key=bob.signed_pre_key(1),
        kem_pre_keys=[signed(1, KemKeyPair)],
        kem_last_resort=signed(100, KemKeyPair),
        kyber_pre_keys=[signed(1, KyberKeyPair), signed(2, KyberKeyPair)],
        kyber_last_resort=kyber_last_resort,
    )
    assert (counts.kyber_pre_keys, counts.kyber_last_resort_id) == (2, 900)
    assert (counts.kem_pre_keys, counts.kem_last_resort_id) == (1, 100)
    alice = await online(relay, Device("alice", 1, rng))
    kyber_ids, kem_ids = [], []
    for _ in range(2):
        bundle = await alice.fetch_bundle("bob", 1)
        bundle.verify()
        assert isinstance(bundle.kem_pre_key, KyberPublicKey)
        kyber_ids.append(bundle.kem_pre_key_id)
    # Asking for the ML-KEM prekey (a client that does not speak version 4) gets that kind.
    bundle = await alice.fetch_bundle("bob", 1, kyber=False)
    bundle.verify()
    assert not isinstance(bundle.kem_pre_key, KyberPublicKey)
    kem_ids.append(bundle.kem_pre_key_id)
    raw = await alice.request("get_bundle", account="bob", device_id=1)
    assert raw["bundles"][0]["kyber_pre_key"]["last_resort"] is True
    assert raw["bundles"][0]["kyber_pre_key"]["id"] == 900
    assert raw["bundles"][0]["kem_pre_key"]["last_resort"] is True
    # Every claim takes one prekey of each one-time kind (the relay does not know which the
    # fetcher will use), so the one ML-KEM prekey went with the first bundle.
    assert kyber_ids == [1, 2] and kem_ids == [100]
    counts = await b.prekey_counts()
    assert (counts.kyber_pre_keys, counts.kyber_last_resort_id) == (0, 900)
    last = await alice.get_signed_pre_key("bob", 1, 900, kind="kyber_last_resort")
    assert last.public_key == kyber_last_resort[1].serialize()


async def test_kyber_prekeys_of_wrong_length_or_type_byte_are_bad_requests(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    good = KyberKeyPair.generate(rng).public_key.serialize()
    mlkem = KemKeyPair.generate(rng).public_key.serialize()
    for key in (good[:-1], good + b"\x00", b"\x0a" + good[1:], mlkem, b"\x08"):
        signature = bob.identity.sign(key, rng)
        for field in ("kyber_pre_keys", "kyber_last_resort"):
            entry = {"id": 1, "public_key": b64(key), "signature": b64(signature)}
            await refused(
                b.request(
                    "upload_prekeys",
                    signed_pre_key={"id": 1, **_signed_json(bob.signed_pre_key(1))},
                    **{field: [entry] if field == "kyber_pre_keys" else entry},
                ),
                "bad_request",
            )
    # A good key with a signature over something else is refused too; nothing was stored.
    wrong = bob.identity.sign(good[:-1], rng)
    await refused(
        b.upload_prekeys(kyber_pre_keys=[(1, good, wrong)]),
        "invalid_signature",
    )
    counts = await b.prekey_counts()
    assert (counts.kyber_pre_keys, counts.kyber_last_resort_id, counts.signed_pre_key_id) == (0, None, None)


def _signed_json(entry) -> dict:
    _key_id, key, signature = entry
    return {"public_key": b64(key.serialize()), "signature": b64(signature)}


async def test_a_bad_kem_signature_stores_nothing(relay, rng):
    bob = Device("bob", 1, rng)
    b = await online(relay, bob)
    key = KemKeyPair.generate(rng).public_key
    wrong = bob.identity.sign(key.serialize()[:-1], rng)
    await refused(
        b.upload_prekeys(signed_pre_key=bob.signed_pre_key(1), kem_pre_keys=[(1, key, wrong)]),
        "invalid_signature",
    )
    counts = await b.prekey_counts()
    assert (counts.kem_pre_keys, counts.signed_pre_key_id) == (0, None)


async def test_bundles_of_unknown_accounts_and_devices(relay, rng):
    alice = await online(relay, Device("alice", 1, rng))
    await refused(alice.fetch_bundles("nobody"), "unknown_account")
    await refused(alice.fetch_bundle("alice", 9), "unknown_device")
    await refused(alice.fetch_bundle("alice", 1), "no_bundle")
