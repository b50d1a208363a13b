"""SessionRecord with PQXDH: sessions start with PQXDH whenever the bundle carries a KEM prekey,
record which agreement started them, survive storage (format version 2, version 1 still read),
and refuse every bad input with a typed error and the record unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from e2e import protobuf
from e2e.errors import (
    DecodeError,
    DowngradeError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    StateFormatError,
)
from e2e.kem import KemCiphertext, KemKeyPair
from e2e.keys import KeyPair, PrivateKey, Rng
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage
from e2e.x3dh import PreKeyBundle

# Written by the version-1 session code (commit 6b92139, before PQXDH existed) from a
# conversation with keys drawn from SHA-256 counter-mode randomness: Alice sent "first", Bob
# replied "reply", Alice decrypted it.  ``ALICE_PENDING_V1`` is a second, unanswered session.
V1_KEYS = {
    "bob_identity": "3060497f8e3793caa93556eb0f7de54d8c8cd6aa5f945fb4dc789e6624cea07b",
    "bob_signed_pre_key": "b08ef73fdc5fe901a50e79c9c742ef9ea4f9448cfa7f4d1f30902d19df6da25e",
    "bob_one_time_pre_key": "e86e55c8de563085fc7d797a96de8dac96d1de6e769cd11a3c9ee99ec7f1036d",
    "alice_identity": "70230e0b47eeca6ae7ab999462ea34a865328710c82ded1000497b98dd512252",
}
ALICE_V1 = bytes.fromhex(
    "53010a8b03080312210526cd047a7e0ad603fb3bc66e9ecc412c0f790b66974ec316235d55ee477e783d1a21050563ae"
    "7efa6bacfcbdd23789ae5ad2a3654ebeb4dfb2751401110ec6ca910b602220d66a4b1491c20dad2a1e31322e7414a45f"
    "c9bdbc453da0c801b44245104ebc392a20d0a1548c981c3b3670da53a2db8ad294a91821fa96f21645d22e083f77df25"
    "6432210521e479df54e94d94e78397d04a6bcf806198a49129320d8e9c49d6450324c9413a202c8d0b1898dc447591b1"
    "e16a809d75de537d9f63718a97ee87c6ab06f3803f9a40004800528801591c45f69119538c2574e3b8fd812935ac79e5"
    "bf1e10abf5bb8e0243130159429035821fdf872adc31673e2834a2590de724d65d513b48da4c17bb7985c77fdb000000"
    "0048c6efcf0a2f5c0c084a0c11f7acdb4f9b1ef1fca22e4c10d91d2c7dd4f3c91c8e2e3bea0405100bd75e098de74bdc"
    "287b4813475c0fb909e5d62926cae6efba000000015a0068b50d7092217a2105885b7e7d6a7cf415d90c2130f9ddd5b8"
    "af2847f40763ce4d46f66b7d5395a947"
)
BOB_V1 = bytes.fromhex(
    "53010ac60208031221050563ae7efa6bacfcbdd23789ae5ad2a3654ebeb4dfb2751401110ec6ca910b601a210526cd04"
    "7a7e0ad603fb3bc66e9ecc412c0f790b66974ec316235d55ee477e783d2220fb43cb2a68241bff1428be8373574dbb47"
    "c630175b1af381bd08149f9993cbda2a204894c68924251a688e043a955d43c198412bf818ad6a64e719da778b311d57"
    "6632210548c6efcf0a2f5c0c084a0c11f7acdb4f9b1ef1fca22e4c10d91d2c7dd4f3c91c3a208e2e3bea0405100bd75e"
    "098de74bdc287b4813475c0fb909e5d62926cae6efba400148005244957c48b88fc940e84d7dd83e7330659873e93de0"
    "28e25a0ddb4f1f2d537392145f35db2a7033e3f51d071ab0547f6c6306077eca1fac468b5e5d042f1c9fca7b00000001"
    "5a0068922170b50d7a2105885b7e7d6a7cf415d90c2130f9ddd5b8af2847f40763ce4d46f66b7d5395a947"
)
ALICE_PENDING_V1 = bytes.fromhex(
    "53010aef02080312210526cd047a7e0ad603fb3bc66e9ecc412c0f790b66974ec316235d55ee477e783d1a21050563ae"
    "7efa6bacfcbdd23789ae5ad2a3654ebeb4dfb2751401110ec6ca910b6022202cbc81e006933b1acf42806c593c53870f"
    "298874e935147d0e89e64f7d0bfb0a2a2050b76469740396336c47e9b355cbe09970571f923a625bba7193cd855657f2"
    "7b32210511f7cad57f1badc2b7d057f8024796fd784832ad2e40b45fe1425dd40911b9293a20b5cd180f3ebe0ce90f28"
    "68ea82ce1bf2db962d827679012e4f962d275d7d5262400048005244591c45f69119538c2574e3b8fd812935ac79e5bf"
    "1e10abf5bb8e02431301594260def3ee3a5ab27cb01f5a666a6dad0a4aa9519f1aa9b583042e8760db71941d00000000"
    "5a006227081f10071a210505ee3485d586f6152bde871e9bab8290d394d373d4667da22fc0a8559c8dc84668b50d7092"
    "217a210505ee3485d586f6152bde871e9bab8290d394d373d4667da22fc0a8559c8dc846"
)


@dataclass
class Bob:
    identity: KeyPair
    signed_pre_key: KeyPair
    one_time: dict[int, KeyPair]
    kem_one_time: dict[int, KemKeyPair]
    kem_last_resort: KemKeyPair
    bundle_kem_signatures: dict[int, bytes]
    signed_pre_key_signature: bytes

    @classmethod
    def create(cls, rng: Rng) -> Bob:
        identity = KeyPair.generate(rng)
        signed_pre_key = KeyPair.generate(rng)
        kem_keys = {1: KemKeyPair.generate(rng), 2: KemKeyPair.generate(rng), 500: KemKeyPair.generate(rng)}
        return cls(
            identity=identity,
            signed_pre_key=signed_pre_key,
            one_time={11: KeyPair.generate(rng), 12: KeyPair.generate(rng)},
            kem_one_time={1: kem_keys[1], 2: kem_keys[2]},
            kem_last_resort=kem_keys[500],
            bundle_kem_signatures={
                key_id: identity.sign(key.public_key.serialize(), rng) for key_id, key in kem_keys.items()
            },
            signed_pre_key_signature=identity.sign(signed_pre_key.public_key.serialize(), rng),
        )

    def bundle(self, pre_key_id: int | None = 11, kem_id: int | None = 1) -> PreKeyBundle:
        kem_key = None if kem_id is None else self.kem(kem_id)
        return PreKeyBundle(
            registration_id=99,
            device_id=1,
            identity_key=self.identity.public_key,
            signed_pre_key_id=5,
            signed_pre_key=self.signed_pre_key.public_key,
            signed_pre_key_signature=self.signed_pre_key_signature,
            pre_key_id=pre_key_id,
            pre_key=None if pre_key_id is None else self.one_time[pre_key_id].public_key,
            kem_pre_key_id=kem_id,
            kem_pre_key=None if kem_key is None else kem_key.public_key,
            kem_pre_key_signature=None if kem_id is None else self.bundle_kem_signatures[kem_id],
        )

    def kem(self, kem_id: int | None) -> KemKeyPair | None:
        if kem_id == 500:
            return self.kem_last_resort
        return None if kem_id is None else self.kem_one_time.get(kem_id)

    def receive(self, record: SessionRecord, body: bytes, rng: Rng, **options: bool) -> bytes:
        """What a client does with a PREKEY message: look keys up by id, decrypt, spend one-time keys."""
        message = PreKeySignalMessage.deserialize(body)
        plaintext = record.decrypt_prekey_message(
            message,
            self.identity,
            self.signed_pre_key,
            None if message.pre_key_id is None else self.one_time.get(message.pre_key_id),
            rng,
            our_registration_id=99,
            our_kem_pre_key=self.kem(message.kem_pre_key_id),
            **options,
        )
        self.one_time.pop(message.pre_key_id or -1, None)
        self.kem_one_time.pop(message.kem_pre_key_id or -1, None)
        return plaintext


def _unchanged(record: SessionRecord, action, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    before = record.serialize()
    with pytest.raises(error):
        action()
    assert record.serialize() == before


@pytest.mark.parametrize("pre_key_id", [11, None], ids=["with-OPK", "without-OPK"])
@pytest.mark.parametrize("kem_id", [1, 500], ids=["one-time-KEM", "last-resort-KEM"])
def test_a_pqxdh_conversation(rng: Rng, pre_key_id: int | None, kem_id: int) -> None:
    bob = Bob.create(rng)
    alice_identity = KeyPair.generate(rng)
    alice = SessionRecord.initiate(alice_identity, 7, bob.bundle(pre_key_id, kem_id), rng)
    assert alice.agreement == "pqxdh"
    first = alice.encrypt(b"hello", rng)
    second = alice.encrypt(b"again", rng)
    assert first.type == second.type == MessageType.PREKEY
    decoded = PreKeySignalMessage.deserialize(first.body)
    assert decoded.kem_pre_key_id == kem_id and decoded.kem_ciphertext is not None
    # Every message until the reply repeats the same KEM header.
    assert PreKeySignalMessage.deserialize(second.body).kem_ciphertext == decoded.kem_ciphertext
    bob_record = SessionRecord()
    assert bob.receive(bob_record, first.body, rng) == b"hello"
    assert bob_record.agreement == "pqxdh"
    assert bob.receive(bob_record, second.body, rng) == b"again"
    assert alice.decrypt(bob_record.encrypt(b"reply", rng).body, rng) == b"reply"
    third = alice.encrypt(b"now a WHISPER message", rng)
    assert third.type == MessageType.WHISPER
    assert bob_record.decrypt(third.body, rng) == b"now a WHISPER message"
    # A one-time KEM prekey is spent; the last-resort one stays for the next session.
    assert bob.kem(kem_id) is (bob.kem_last_resort if kem_id == 500 else None)


def test_an_x3dh_bundle_still_gives_an_x3dh_session_in_format_version_1(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(kem_id=None), rng)
    assert alice.agreement == "x3dh"
    first = alice.encrypt(b"hello", rng)
    assert PreKeySignalMessage.deserialize(first.body).kem_ciphertext is None
    bob_record = SessionRecord()
    assert bob.receive(bob_record, first.body, rng) == b"hello"
    assert bob_record.agreement == "x3dh"
    # Until Bob answers, his state holds a pending sending chain (format version 3).
    assert bob_record.serialize()[:2] == b"S\x03"
    bob_record.encrypt(b"hi", rng)
    assert alice.serialize()[:2] == b"S\x01" and bob_record.serialize()[:2] == b"S\x01"


def test_pqxdh_records_are_format_version_2_and_round_trip(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng)
    stored = alice.serialize()
    assert stored[:2] == b"S\x02"
    restored = SessionRecord.deserialize(stored)
    assert restored.serialize() == stored
    assert restored.agreement == "pqxdh"
    # The restored record still sends the KEM header, and Bob can answer it.
    first = restored.encrypt(b"after a restart", rng)
    bob_record = SessionRecord()
    assert bob.receive(bob_record, first.body, rng) == b"after a restart"
    assert SessionRecord.deserialize(bob_record.serialize()).agreement == "pqxdh"
    bob_record.encrypt(b"answer", rng)  # Bob's pending sending chain (format version 3) is used.
    assert bob_record.serialize()[:2] == b"S\x02"


def test_the_frozen_version_1_records_still_load_and_work() -> None:
    keys = {name: KeyPair(PrivateKey(bytes.fromhex(value))) for name, value in V1_KEYS.items()}
    alice = SessionRecord.deserialize(ALICE_V1)
    bob = SessionRecord.deserialize(BOB_V1)
    pending = SessionRecord.deserialize(ALICE_PENDING_V1)
    for record, stored in ((alice, ALICE_V1), (bob, BOB_V1), (pending, ALICE_PENDING_V1)):
        assert record.agreement == "x3dh"
        assert record.serialize() == stored
    rng = SeededForTest()
    assert bob.decrypt(alice.encrypt(b"still here", rng).body, rng) == b"still here"
    message = PreKeySignalMessage.deserialize(pending.encrypt(b"pending", rng).body)
    assert message.kem_ciphertext is None
    fresh = SessionRecord()
    plaintext = fresh.decrypt_prekey_message(
        message,
        keys["bob_identity"],
        keys["bob_signed_pre_key"],
        keys["bob_one_time_pre_key"],
        rng,
        our_registration_id=2,
    )
    assert plaintext == b"pending"


class SeededForTest:
    """Randomness for the fixture test; the ratchet draws some only for new ratchet keys."""

    def __init__(self) -> None:
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return (self._counter.to_bytes(4, "big") * n)[:n]


def test_a_version_1_record_with_version_2_fields_is_refused(rng: Rng) -> None:
    bob = Bob.create(rng)
    stored = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng).serialize()
    with pytest.raises(StateFormatError, match="version-1"):
        SessionRecord.deserialize(b"S\x01" + stored[2:])
    with pytest.raises(StateFormatError, match="version 5"):
        SessionRecord.deserialize(b"S\x05" + stored[2:])


def test_stored_agreement_codes_are_checked(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng)
    state = alice.current_state
    assert state is not None
    serialized_state = state.serialize()
    assert serialized_state.endswith(protobuf.encode_uint_field(16, 2))
    bad_state = serialized_state[: -len(protobuf.encode_uint_field(16, 2))] + protobuf.encode_uint_field(
        16, 9
    )
    with pytest.raises(StateFormatError, match="agreement"):
        SessionRecord.deserialize(b"S\x02" + protobuf.encode_bytes_field(1, bad_state))


def test_a_tampered_kem_ciphertext_fails_the_mac_and_changes_nothing(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng)
    message = PreKeySignalMessage.deserialize(alice.encrypt(b"hello", rng).body)
    assert message.kem_ciphertext is not None
    flipped = bytearray(message.kem_ciphertext.raw)
    flipped[1000] ^= 0x10
    tampered = PreKeySignalMessage.create(
        message.registration_id,
        message.pre_key_id,
        message.signed_pre_key_id,
        message.base_key,
        message.identity_key,
        message.message,
        message.kem_pre_key_id,
        KemCiphertext(bytes(flipped)),
    )
    bob_record = SessionRecord()
    _unchanged(bob_record, lambda: bob.receive(bob_record, tampered.serialized, rng), InvalidMessageError)
    assert not bob_record.has_current_state() and 1 in bob.kem_one_time and 11 in bob.one_time
    # The genuine message still works afterwards.
    assert bob.receive(bob_record, message.serialized, rng) == b"hello"


def test_a_wrong_kem_prekey_id_is_refused_and_changes_nothing(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(kem_id=1), rng)
    message = PreKeySignalMessage.deserialize(alice.encrypt(b"hello", rng).body)
    bob_record = SessionRecord()
    for wrong_id, error in ((2, InvalidMessageError), (500, InvalidMessageError), (77, InvalidKeyError)):
        wrong = replace(message, kem_pre_key_id=wrong_id)
        relabelled = PreKeySignalMessage.create(
            wrong.registration_id,
            wrong.pre_key_id,
            wrong.signed_pre_key_id,
            wrong.base_key,
            wrong.identity_key,
            wrong.message,
            wrong.kem_pre_key_id,
            wrong.kem_ciphertext,
        )
        _unchanged(bob_record, lambda body=relabelled.serialized: bob.receive(bob_record, body, rng), error)
    assert set(bob.kem_one_time) == {1, 2}


def test_a_spent_one_time_kem_prekey_is_refused_and_changes_nothing(rng: Rng) -> None:
    bob = Bob.create(rng)
    bundle = bob.bundle(pre_key_id=None, kem_id=1)
    bob_record = SessionRecord()
    first = SessionRecord.initiate(KeyPair.generate(rng), 7, bundle, rng).encrypt(b"one", rng)
    assert bob.receive(bob_record, first.body, rng) == b"one"
    second = SessionRecord.initiate(KeyPair.generate(rng), 8, bundle, rng).encrypt(b"two", rng)
    _unchanged(bob_record, lambda: bob.receive(bob_record, second.body, rng), InvalidKeyError)
    # The first message again is a duplicate of a known session, not a new one.
    _unchanged(bob_record, lambda: bob.receive(bob_record, first.body, rng), DuplicateMessageError)


def test_bundles_with_bad_kem_signatures_start_no_session(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice_identity = KeyPair.generate(rng)
    for bad in (
        replace(bob.bundle(), kem_pre_key_signature=None),
        replace(bob.bundle(), kem_pre_key_signature=bob.bundle_kem_signatures[2]),
        replace(bob.bundle(), kem_pre_key=bob.kem_one_time[2].public_key),
    ):
        with pytest.raises(InvalidSignatureError):
            SessionRecord.initiate(alice_identity, 7, bad, rng)
        record = SessionRecord.initiate(alice_identity, 7, bob.bundle(kem_id=None), rng)
        _unchanged(
            record,
            lambda bad=bad, record=record: record.start_session(alice_identity, 7, bad, rng),
            InvalidSignatureError,
        )


def test_stripping_the_kem_header_from_alices_message_fails_the_mac(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng)
    message = PreKeySignalMessage.deserialize(alice.encrypt(b"hello", rng).body)
    stripped = PreKeySignalMessage.create(
        message.registration_id,
        message.pre_key_id,
        message.signed_pre_key_id,
        message.base_key,
        message.identity_key,
        message.message,
    )
    bob_record = SessionRecord()
    _unchanged(bob_record, lambda: bob.receive(bob_record, stripped.serialized, rng), InvalidMessageError)


def test_bob_can_require_pqxdh(rng: Rng) -> None:
    bob = Bob.create(rng)
    x3dh_message = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(kem_id=None), rng).encrypt(
        b"x", rng
    )
    bob_record = SessionRecord()
    _unchanged(
        bob_record,
        lambda: bob.receive(bob_record, x3dh_message.body, rng, require_pqxdh=True),
        DowngradeError,
    )
    pq_message = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(12), rng).encrypt(b"pq", rng)
    assert bob.receive(bob_record, pq_message.body, rng, require_pqxdh=True) == b"pq"


def test_a_kem_header_with_a_missing_half_is_a_decode_error(rng: Rng) -> None:
    bob = Bob.create(rng)
    alice = SessionRecord.initiate(KeyPair.generate(rng), 7, bob.bundle(), rng)
    body = alice.encrypt(b"hello", rng).body
    message = PreKeySignalMessage.deserialize(body)
    assert message.kem_ciphertext is not None
    suffix = protobuf.encode_bytes_field(8, message.kem_ciphertext.serialize())
    assert body.endswith(suffix)
    with pytest.raises(DecodeError):
        PreKeySignalMessage.deserialize(body[: -len(suffix)])


def test_a_record_that_used_pqxdh_refuses_a_later_x3dh_start(rng: Rng) -> None:
    """A relay that withholds the KEM prekey after a first PQXDH contact cannot downgrade the next."""
    bob = Bob.create(rng)
    alice_identity = KeyPair.generate(rng)
    alice = SessionRecord.initiate(alice_identity, 7, bob.bundle(), rng)
    withheld = bob.bundle(pre_key_id=12, kem_id=None)
    _unchanged(alice, lambda: alice.start_session(alice_identity, 7, withheld, rng), DowngradeError)
    # Still refused once the PQXDH state is only archived.
    alice.start_session(alice_identity, 7, bob.bundle(pre_key_id=None, kem_id=500), rng)
    alice.archive_current_state()
    _unchanged(alice, lambda: alice.start_session(alice_identity, 7, withheld, rng), DowngradeError)
    # The caller may accept the downgrade explicitly.
    alice.start_session(alice_identity, 7, withheld, rng, allow_downgrade=True)
    assert alice.agreement == "x3dh"
    # A record that never held a PQXDH state starts X3DH sessions as before.
    fresh = SessionRecord.initiate(alice_identity, 7, bob.bundle(pre_key_id=None, kem_id=None), rng)
    fresh.start_session(alice_identity, 7, bob.bundle(pre_key_id=None, kem_id=None), rng)
    assert fresh.agreement == "x3dh"
