"""Signal's PQXDH (e2e.pqxdh_v4), version-4 messages (e2e.wire) and version-4 sessions (e2e.session).

The key derivation is checked against an independent HKDF (``cryptography``'s) over the inputs in
libsignal's order (``rust/protocol/src/pqxdh.rs``); the wire bytes against the layout libsignal
0.103 was observed to write; sessions through two real records, with bad input that must leave
the records unchanged.  libsignal itself checks the same code in ``tests/interop/test_libsignal_v4.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from conftest import DeterministicRng
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parties import Party

from e2e import kdf, pqxdh_v4
from e2e.errors import (
    DecodeError,
    DowngradeError,
    E2EError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    StateFormatError,
    UnknownPreKeyError,
    VersionMismatchError,
)
from e2e.kem import KemKeyPair
from e2e.kem import encapsulate as ml_kem_encapsulate
from e2e.keys import KeyPair, Rng
from e2e.kyber import KyberCiphertext, KyberKeyPair
from e2e.pq_ratchet import Direction, PostQuantumRatchet
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage, SignalMessage, encode_signal_message
from e2e.x3dh import PreKeyBundle


@dataclass
class KyberParty(Party):
    """A device that also publishes Kyber prekeys: one-time ones by id, and a last-resort one."""

    kyber_one_time: dict[int, KyberKeyPair] = field(default_factory=dict)
    kyber_last_resort: tuple[int, KyberKeyPair] | None = None

    @classmethod
    def create_kyber(cls, rng: Rng, registration_id: int) -> KyberParty:
        base = Party.create(rng, registration_id)
        party = cls(base.identity, registration_id, base.signed_pre_key, base.signed_pre_key_id)
        party.one_time_pre_keys = base.one_time_pre_keys
        party.kyber_one_time = {500: KyberKeyPair.generate(rng)}
        party.kyber_last_resort = (900, KyberKeyPair.generate(rng))
        return party

    def kyber_bundle(
        self, rng: Rng, *, last_resort: bool = False, with_one_time: bool = True
    ) -> PreKeyBundle:
        if last_resort or not self.kyber_one_time:
            assert self.kyber_last_resort is not None
            kyber_id, kyber_pair = self.kyber_last_resort
        else:
            kyber_id = min(self.kyber_one_time)
            kyber_pair = self.kyber_one_time[kyber_id]
        bundle = self.bundle(rng, with_one_time=with_one_time)
        return replace(
            bundle,
            kem_pre_key_id=kyber_id,
            kem_pre_key=kyber_pair.public_key,
            kem_pre_key_signature=self.identity.sign(kyber_pair.public_key.serialize(), rng),
        )

    def kyber_lookup(self, kyber_id: int | None) -> KyberKeyPair | None:
        if self.kyber_last_resort is not None and kyber_id == self.kyber_last_resort[0]:
            return self.kyber_last_resort[1]
        return None if kyber_id is None else self.kyber_one_time.get(kyber_id)

    def receive_v4(self, record: SessionRecord, body: bytes, rng: Rng, **options: object) -> bytes:
        message = PreKeySignalMessage.deserialize(body)
        known = record.has_state_for_base_key(message.base_key)
        one_time = None
        if message.pre_key_id is not None and not known:
            one_time = self.one_time_pre_keys.get(message.pre_key_id)
        kyber_pair = None if known else self.kyber_lookup(message.kem_pre_key_id)
        plaintext = record.decrypt_prekey_message(
            message,
            self.identity,
            self.signed_pre_key,
            one_time,
            rng,
            our_registration_id=self.registration_id,
            our_kem_pre_key=kyber_pair,
            **options,  # type: ignore[arg-type]
        )
        if not known:
            # One-time prekeys (EC and Kyber) are spent; the last-resort Kyber prekey stays.
            if message.pre_key_id is not None:
                self.one_time_pre_keys.pop(message.pre_key_id, None)
            self.kyber_one_time.pop(message.kem_pre_key_id, None)  # type: ignore[arg-type]
        return plaintext


def _independent_kdf(ikm: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 96, None, pqxdh_v4.PQXDH_V4_INFO).derive(ikm)


# -- the key agreement -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_one_time", [True, False])
def test_both_sides_derive_libsignals_three_keys(rng: Rng, with_one_time: bool) -> None:
    alice_identity = KeyPair.generate(rng)
    bob = KyberParty.create_kyber(rng, 2000)
    bundle = bob.kyber_bundle(rng, with_one_time=with_one_time)
    message, alice_secret = pqxdh_v4.initiate(alice_identity, bundle, rng)
    assert isinstance(message.kem_ciphertext, KyberCiphertext)
    one_time = bob.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None
    bob_secret = pqxdh_v4.respond(
        bob.identity, bob.signed_pre_key, one_time, bob.kyber_lookup(message.kem_pre_key_id), message
    )
    assert alice_secret.root_key == bob_secret.root_key
    assert alice_secret.chain_key == bob_secret.chain_key
    assert alice_secret.pq_ratchet_key == bob_secret.pq_ratchet_key is not None
    # libsignal's inputs, in its order: 0xFF×32, DH1, DH2, DH3, [DH4], SS; no salt; 96 bytes.
    dh = [
        bob.signed_pre_key.agree(alice_identity.public_key),
        bob.identity.agree(message.base_key),
        bob.signed_pre_key.agree(message.base_key),
    ] + ([one_time.agree(message.base_key)] if one_time is not None else [])
    kyber_pair = bob.kyber_lookup(message.kem_pre_key_id)
    assert kyber_pair is not None
    ss = kyber_pair.decapsulate(message.kem_ciphertext)
    expected = _independent_kdf(b"\xff" * 32 + b"".join(dh) + ss)
    assert alice_secret.root_key.key + alice_secret.chain_key.key + alice_secret.pq_ratchet_key == expected
    assert (
        alice_secret.associated_data
        == alice_identity.public_key.serialize() + bob.identity.public_key.serialize()
    )


def test_initiate_draws_the_base_key_then_the_encapsulation_randomness(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    bundle = bob.kyber_bundle(rng)
    requests: list[int] = []

    def counting(n: int) -> bytes:
        requests.append(n)
        return rng(n)

    pqxdh_v4.initiate(KeyPair.generate(rng), bundle, counting)
    assert requests == [32, 32]


def test_bundles_without_a_kyber_prekey_or_with_ml_kem_are_refused(rng: Rng) -> None:
    alice = KeyPair.generate(rng)
    bob = KyberParty.create_kyber(rng, 2000)
    with pytest.raises(DowngradeError):
        pqxdh_v4.initiate(alice, bob.bundle(rng), rng)
    ml_kem = KemKeyPair.generate(rng)
    ml_kem_bundle = replace(
        bob.bundle(rng),
        kem_pre_key_id=1,
        kem_pre_key=ml_kem.public_key,
        kem_pre_key_signature=bob.identity.sign(ml_kem.public_key.serialize(), rng),
    )
    with pytest.raises(InvalidKeyError, match="Kyber1024"):
        pqxdh_v4.initiate(alice, ml_kem_bundle, rng)


def test_a_bad_kyber_prekey_signature_is_refused_before_any_work(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    bundle = bob.kyber_bundle(rng)
    forged = replace(bundle, kem_pre_key_signature=bytes(64))
    with pytest.raises(InvalidSignatureError):
        pqxdh_v4.initiate(KeyPair.generate(rng), forged, rng)
    other = KyberKeyPair.generate(rng)
    swapped = replace(bundle, kem_pre_key=other.public_key)
    with pytest.raises(InvalidSignatureError):
        pqxdh_v4.initiate(KeyPair.generate(rng), swapped, rng)


def test_unknown_or_used_kyber_prekeys_are_typed_errors(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    message, _ = pqxdh_v4.initiate(KeyPair.generate(rng), bob.kyber_bundle(rng, with_one_time=False), rng)
    with pytest.raises(UnknownPreKeyError, match="no Kyber prekey with id 500"):
        pqxdh_v4.respond(bob.identity, bob.signed_pre_key, None, None, message)
    without_ciphertext = replace(message, kem_pre_key_id=None, kem_ciphertext=None)
    with pytest.raises(DowngradeError):
        pqxdh_v4.respond(bob.identity, bob.signed_pre_key, None, bob.kyber_lookup(500), without_ciphertext)


def test_a_tampered_kyber_ciphertext_gives_a_different_secret(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    message, alice_secret = pqxdh_v4.initiate(KeyPair.generate(rng), bob.kyber_bundle(rng), rng)
    assert message.kem_ciphertext is not None
    raw = bytearray(message.kem_ciphertext.raw)
    raw[10] ^= 0x40
    tampered = replace(message, kem_ciphertext=KyberCiphertext(bytes(raw)))
    one_time = bob.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None
    bob_secret = pqxdh_v4.respond(bob.identity, bob.signed_pre_key, one_time, bob.kyber_lookup(500), tampered)
    assert bob_secret.root_key != alice_secret.root_key


# -- version-4 messages on the wire ------------------------------------------------------------------


def _v4_message(
    rng: Rng, pq_ratchet: bytes = b"", addresses: bytes | None = None
) -> tuple[bytes, bytes, bytes]:
    mac_key = rng(32)
    associated = KeyPair.generate(rng).public_key.serialize() + KeyPair.generate(rng).public_key.serialize()
    body = encode_signal_message(
        mac_key,
        associated,
        KeyPair.generate(rng).public_key.serialize(),
        0,
        0,
        bytes(80),
        version=4,
        pq_ratchet=pq_ratchet,
        addresses=addresses,
    )
    return body, mac_key, associated


def test_version_4_signal_messages_carry_fields_5_and_6_under_the_mac(rng: Rng) -> None:
    pq = bytes(range(37))
    addresses = bytes(range(36))
    body, mac_key, associated = _v4_message(rng, pq, addresses)
    assert body[0] == 0x44
    message = SignalMessage.deserialize(body)
    assert (message.version, message.pq_ratchet, message.addresses) == (4, pq, addresses)
    message.verify_mac_with(mac_key, associated)
    # Field 5 starts after the 80-byte ciphertext: tag 0x2a, length 37.
    index = body.index(bytes((0x2A, 37)) + pq)
    for position in (index + 2, index + 2 + 37 + 2):  # one byte of pq_ratchet, one of addresses
        flipped = bytearray(body)
        flipped[position] ^= 0x01
        with pytest.raises(InvalidMessageError):
            SignalMessage.deserialize(bytes(flipped)).verify_mac_with(mac_key, associated)
    # An empty pq_ratchet is left out, as libsignal leaves it out.
    empty, _, _ = _v4_message(rng)
    assert SignalMessage.deserialize(empty).pq_ratchet == b""
    assert b"\x2a" not in empty[-(8 + 1) :]


def test_fields_5_and_6_do_not_exist_in_version_3() -> None:
    with pytest.raises(ValueError):
        encode_signal_message(bytes(32), bytes(66), b"\x05" + bytes(32), 0, 0, bytes(16), pq_ratchet=b"x")
    with pytest.raises(ValueError):
        encode_signal_message(bytes(32), bytes(66), b"\x05" + bytes(32), 0, 0, bytes(16), version=5)


@pytest.mark.parametrize("version_byte", [0x34, 0x43, 0x45, 0x54, 0x24])
def test_other_version_bytes_are_refused_naming_the_version(rng: Rng, version_byte: int) -> None:
    body, _, _ = _v4_message(rng)
    with pytest.raises(DecodeError, match=f"version {version_byte >> 4}"):
        SignalMessage.deserialize(bytes((version_byte,)) + body[1:])


def test_oversized_fields_5_and_6_are_refused(rng: Rng) -> None:
    with pytest.raises(ValueError):
        _v4_message(rng, pq_ratchet=bytes(1025))
    good, _, _ = _v4_message(rng)
    # Re-frame a message with a 1025-byte field 5 by hand: the decoder refuses it unread.
    header_end = len(good) - 8
    oversized = good[:header_end] + bytes((0x2A, 0x81, 0x08)) + bytes(1025) + good[header_end:]
    with pytest.raises(DecodeError, match="pq_ratchet"):
        SignalMessage.deserialize(oversized)


# -- version-4 sessions ------------------------------------------------------------------------------


def _start(rng: Rng, **bundle_options: bool) -> tuple[KyberParty, SessionRecord, KyberParty, SessionRecord]:
    alice = KyberParty.create_kyber(rng, 1000)
    bob = KyberParty.create_kyber(rng, 2000)
    alice_record = SessionRecord.initiate(alice.identity, 1000, bob.kyber_bundle(rng, **bundle_options), rng)
    return alice, alice_record, bob, SessionRecord()


def test_a_version_4_session_end_to_end(rng: Rng) -> None:
    _, alice_record, bob, bob_record = _start(rng)
    assert alice_record.session_version == 4 and alice_record.agreement == "pqxdh_v4"
    first = alice_record.encrypt(b"hello", rng)
    assert first.type == MessageType.PREKEY and first.body[0] == 0x44
    parsed = PreKeySignalMessage.deserialize(first.body)
    assert parsed.version == 4 and parsed.message.version == 4 and parsed.kem_pre_key_id == 500
    assert len(parsed.kem_ciphertext.serialize()) == 1569  # type: ignore[union-attr]
    second = alice_record.encrypt(b"again", rng)
    assert bob.receive_v4(bob_record, first.body, rng) == b"hello"
    assert 500 not in bob.kyber_one_time  # the one-time Kyber prekey is spent
    assert bob.receive_v4(bob_record, second.body, rng) == b"again"
    for number in range(6):
        reply = bob_record.encrypt(b"reply %d" % number, rng)
        assert reply.type == MessageType.WHISPER and reply.body[0] == 0x44
        assert alice_record.decrypt(reply.body, rng) == b"reply %d" % number
        answer = alice_record.encrypt(b"answer %d" % number, rng)
        assert bob_record.decrypt(answer.body, rng) == b"answer %d" % number


def test_the_last_resort_kyber_prekey_serves_many_sessions(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    for number in range(2):
        alice = SessionRecord.initiate(
            KeyPair.generate(rng), 1000 + number, bob.kyber_bundle(rng, last_resort=True), rng
        )
        bob_record = SessionRecord()
        assert bob.receive_v4(bob_record, alice.encrypt(b"hi", rng).body, rng) == b"hi"
    assert bob.kyber_last_resort is not None


def test_a_used_one_time_kyber_prekey_is_refused_and_the_record_unchanged(rng: Rng) -> None:
    bob = KyberParty.create_kyber(rng, 2000)
    bundle = bob.kyber_bundle(rng)
    first = SessionRecord.initiate(KeyPair.generate(rng), 1000, bundle, rng)
    assert bob.receive_v4(SessionRecord(), first.encrypt(b"one", rng).body, rng) == b"one"
    # A second session made from the same (stale) bundle names the spent Kyber prekey 500.
    second = SessionRecord.initiate(KeyPair.generate(rng), 1001, bundle, rng)
    bob_record = SessionRecord()
    before = bob_record.serialize()
    with pytest.raises(UnknownPreKeyError):
        bob.receive_v4(bob_record, second.encrypt(b"two", rng).body, rng)
    assert bob_record.serialize() == before


def test_failed_decryptions_leave_a_version_4_record_unchanged(rng: Rng) -> None:
    _, alice_record, bob, bob_record = _start(rng)
    assert bob.receive_v4(bob_record, alice_record.encrypt(b"hello", rng).body, rng) == b"hello"
    reply = bob_record.encrypt(b"reply", rng).body
    before = alice_record.serialize()
    for position in (1, 40, len(reply) - 20, len(reply) - 1):
        flipped = bytearray(reply)
        flipped[position] ^= 0x04
        with pytest.raises(E2EError):
            alice_record.decrypt(bytes(flipped), rng)
        assert alice_record.serialize() == before
    # A non-empty pq_ratchet on a session that runs no post-quantum ratchet is refused.
    message = SignalMessage.deserialize(reply)
    state = alice_record.current_state
    assert state is not None
    with pytest.raises(InvalidMessageError, match="post-quantum"):
        state.decrypt(message._replace(pq_ratchet=b"\x01"), rng)
    with pytest.raises(InvalidMessageError):
        alice_record.decrypt_message(message._replace(pq_ratchet=b"\x01"), rng)
    assert alice_record.serialize() == before
    assert alice_record.decrypt(reply, rng) == b"reply"
    with pytest.raises(InvalidMessageError):
        alice_record.decrypt(reply, rng)


def test_a_version_3_message_on_a_version_4_session_is_a_version_mismatch(rng: Rng) -> None:
    _, alice_record, bob, bob_record = _start(rng)
    bob.receive_v4(bob_record, alice_record.encrypt(b"hello", rng).body, rng)
    reply = SignalMessage.deserialize(bob_record.encrypt(b"reply", rng).body)
    state = alice_record.current_state
    assert state is not None
    with pytest.raises(VersionMismatchError):
        state.decrypt(reply._replace(version=3), rng)
    assert alice_record.decrypt_message(reply, rng) == b"reply"


def test_a_version_4_session_never_goes_back_to_version_3(rng: Rng) -> None:
    alice, alice_record, bob, bob_record = _start(rng)
    assert bob.receive_v4(bob_record, alice_record.encrypt(b"hello", rng).body, rng) == b"hello"
    # Alice: a new bundle from Bob without a Kyber prekey (or with ML-KEM) is a downgrade.
    before = alice_record.serialize()
    with pytest.raises(DowngradeError):
        alice_record.start_session(alice.identity, 1000, bob.bundle(rng), rng)
    assert alice_record.serialize() == before
    # Bob: a version-3 PreKeySignalMessage from Alice's device is refused, the record unchanged.
    v3_alice = SessionRecord.initiate(alice.identity, 1000, bob.bundle(rng), rng)
    v3_first = PreKeySignalMessage.deserialize(v3_alice.encrypt(b"old", rng).body)
    before = bob_record.serialize()
    with pytest.raises(DowngradeError):
        bob_record.decrypt_prekey_message(
            v3_first,
            bob.identity,
            bob.signed_pre_key,
            bob.one_time_pre_keys.get(v3_first.pre_key_id or -1),
            rng,
            our_registration_id=bob.registration_id,
        )
    assert bob_record.serialize() == before
    # Told to, both accept it.
    alice_record.start_session(
        alice.identity, 1000, bob.bundle(rng, with_one_time=False), rng, allow_downgrade=True
    )
    assert alice_record.session_version == 3


def test_version_4_records_round_trip_in_format_4(rng: Rng) -> None:
    _, alice_record, bob, bob_record = _start(rng)
    stored = alice_record.serialize()
    assert stored[:2] == b"S\x04"
    restored = SessionRecord.deserialize(stored)
    assert restored.serialize() == stored
    assert (
        bob.receive_v4(bob_record, restored.encrypt(b"after a restart", rng).body, rng) == b"after a restart"
    )
    bob_restored = SessionRecord.deserialize(bob_record.serialize())
    assert restored.decrypt(bob_restored.encrypt(b"back", rng).body, rng) == b"back"
    # A version-4 state inside a record that says format 3 is refused.
    with pytest.raises(StateFormatError, match="version-3"):
        SessionRecord.deserialize(b"S\x03" + stored[2:])


# -- the seam for the post-quantum ratchet ---------------------------------------------------------


class HashChainRatchet:
    """A stand-in post-quantum ratchet for testing the seam: each side keeps a send and a receive
    counter; a message is the 4-byte counter, its key SHA-256 over the auth key, direction and
    counter.  It is not SPQR (it adds no post-quantum security); it exercises the Triple Ratchet's
    mixing, the copy-then-commit and storage exactly as SPQR will.
    """

    def __init__(
        self, auth_key: bytes, direction: Direction, sent: int = 0, received: frozenset[int] = frozenset()
    ) -> None:
        self.auth_key, self.direction, self.sent, self.received = auth_key, direction, sent, received

    def _key(self, sender: Direction, counter: int) -> bytes:
        import hashlib

        return hashlib.sha256(self.auth_key + sender.value.encode() + counter.to_bytes(4, "big")).digest()

    def send(self, rng: Rng) -> tuple[bytes, bytes | None]:
        counter = self.sent
        self.sent += 1
        return counter.to_bytes(4, "big"), self._key(self.direction, counter)

    def recv(self, message: bytes) -> bytes | None:
        if len(message) != 4:
            raise DecodeError("a test ratchet message is 4 bytes")
        counter = int.from_bytes(message, "big")
        if counter in self.received:
            raise InvalidMessageError("replayed test ratchet message")
        self.received = self.received | {counter}
        other = Direction.B2A if self.direction is Direction.A2B else Direction.A2B
        return self._key(other, counter)

    def copy(self) -> PostQuantumRatchet:
        return HashChainRatchet(self.auth_key, self.direction, self.sent, self.received)

    def serialize(self) -> bytes:
        return b"".join(
            [b"T1", self.auth_key, self.direction.value.encode(), self.sent.to_bytes(4, "big")]
            + [c.to_bytes(4, "big") for c in sorted(self.received)]
        )


class HashChainFactory:
    def initial(self, auth_key: bytes, direction: Direction) -> PostQuantumRatchet:
        return HashChainRatchet(auth_key, direction)

    def load(self, data: bytes) -> PostQuantumRatchet:
        if data[:2] != b"T1":
            raise StateFormatError("not a test ratchet state")
        direction = Direction(data[34:37].decode())
        received = frozenset(int.from_bytes(data[i : i + 4], "big") for i in range(41, len(data), 4))
        return HashChainRatchet(data[2:34], direction, int.from_bytes(data[37:41], "big"), received)


def test_the_post_quantum_ratchet_key_salts_every_message_key(rng: Rng) -> None:
    factory = HashChainFactory()
    alice = KyberParty.create_kyber(rng, 1000)
    bob = KyberParty.create_kyber(rng, 2000)
    alice_record = SessionRecord.initiate(
        alice.identity, 1000, bob.kyber_bundle(rng), rng, pq_ratchet_factory=factory
    )
    bob_record = SessionRecord(pq_ratchet_factory=factory)
    first = alice_record.encrypt(b"hello", rng)
    inner = PreKeySignalMessage.deserialize(first.body).message
    assert inner.pq_ratchet == bytes(4)
    assert bob.receive_v4(bob_record, first.body, rng) == b"hello"
    # A record without the ratchet refuses such a message (non-empty field 5), and stays empty.
    other = SessionRecord.initiate(
        KeyPair.generate(rng), 1001, bob.kyber_bundle(rng, last_resort=True), rng, pq_ratchet_factory=factory
    )
    plain_bob = SessionRecord()
    with pytest.raises(InvalidMessageError):
        bob.receive_v4(plain_bob, other.encrypt(b"hi", rng).body, rng)
    assert not plain_bob.has_current_state()
    # The key really is mixed in: the message keys of counter 0 with the ratchet's key verify the
    # MAC of Bob's reply, the unsalted ones do not.
    reply_body = bob_record.encrypt(b"reply", rng).body
    reply = SignalMessage.deserialize(reply_body)
    assert reply.pq_ratchet == bytes(4)
    state = alice_record.current_state
    assert state is not None and state.pq_ratchet is not None
    before = alice_record.serialize()
    # Another ratchet message gives another key: the MAC fails and nothing changes.
    with pytest.raises(InvalidMessageError):
        alice_record.decrypt_message(
            reply._replace(pq_ratchet=b"\xff\xff\xff\xff", serialized=reply.serialized), rng
        )
    assert alice_record.serialize() == before
    assert alice_record.decrypt(reply_body, rng) == b"reply"
    # Stored and restored with the ratchet's state, through the factory.
    stored = alice_record.serialize()
    with pytest.raises(StateFormatError, match="factory"):
        SessionRecord.deserialize(stored)
    restored = SessionRecord.deserialize(stored, pq_ratchet_factory=factory)
    assert bob_record.decrypt(restored.encrypt(b"after restart", rng).body, rng) == b"after restart"


def test_the_seam_uses_libsignals_message_key_derivation(rng: Rng) -> None:
    seed, pq_key = rng(32), rng(32)
    expected = HKDF(hashes.SHA256(), 80, pq_key, b"WhisperMessageKeys").derive(seed)
    assert kdf.derive_message_keys(seed, pq_key) == expected
    assert kdf.derive_message_keys(seed) == HKDF(hashes.SHA256(), 80, None, b"WhisperMessageKeys").derive(
        seed
    )
    with pytest.raises(ValueError):
        kdf.derive_message_keys(seed, bytes(31))


# -- properties: any delivery order decrypts, any bit flip is refused -------------------------------

V4_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _established_v4(rng: Rng, factory: HashChainFactory | None) -> tuple[SessionRecord, SessionRecord]:
    alice = KyberParty.create_kyber(rng, 1000)
    bob = KyberParty.create_kyber(rng, 2000)
    alice_record = SessionRecord.initiate(
        alice.identity, 1000, bob.kyber_bundle(rng, last_resort=True), rng, pq_ratchet_factory=factory
    )
    bob_record = SessionRecord(pq_ratchet_factory=factory)
    assert bob.receive_v4(bob_record, alice_record.encrypt(b"hello", rng).body, rng) == b"hello"
    assert alice_record.decrypt(bob_record.encrypt(b"welcome", rng).body, rng) == b"welcome"
    return alice_record, bob_record


@V4_SETTINGS
@given(st.data(), st.booleans())
def test_any_delivery_order_decrypts_in_version_4(data: st.DataObject, with_ratchet: bool) -> None:
    rng = DeterministicRng(b"v4-permutations")
    alice, bob = _established_v4(rng, HashChainFactory() if with_ratchet else None)
    records = {"alice": alice, "bob": bob}
    pending: dict[str, list[tuple[bytes, bytes]]] = {"alice": [], "bob": []}
    phases = data.draw(st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.integers(1, 5)), max_size=4))
    for phase, (sender, count) in enumerate(phases):
        receiver = "bob" if sender == "alice" else "alice"
        for number in range(count):
            plaintext = b"%s %d.%d" % (sender.encode(), phase, number)
            pending[receiver].append((records[sender].encrypt(plaintext, rng).body, plaintext))
        for name in ("alice", "bob"):
            chosen = data.draw(st.permutations(pending[name]))
            for body, plaintext in chosen[: data.draw(st.integers(0, len(chosen)))]:
                assert records[name].decrypt(body, rng) == plaintext
                pending[name].remove((body, plaintext))
    for name in ("alice", "bob"):
        for body, plaintext in data.draw(st.permutations(pending[name])):
            assert records[name].decrypt(body, rng) == plaintext
            with pytest.raises(InvalidMessageError):  # a duplicate is refused
                records[name].decrypt(body, rng)


@V4_SETTINGS
@given(st.data())
def test_any_bit_flip_in_a_version_4_message_is_refused(data: st.DataObject) -> None:
    rng = DeterministicRng(b"v4-bit-flips")
    alice, bob = _established_v4(rng, HashChainFactory())
    body = bob.encrypt(b"a message with a post-quantum ratchet field", rng).body
    bit = data.draw(st.integers(0, 8 * len(body) - 1))
    flipped = bytearray(body)
    flipped[bit // 8] ^= 1 << (bit % 8)
    before = alice.serialize()
    with pytest.raises(E2EError):
        alice.decrypt(bytes(flipped), rng)
    assert alice.serialize() == before
    assert alice.decrypt(body, rng) == b"a message with a post-quantum ratchet field"


# -- a session start captured from libsignal ---------------------------------------------------------


def test_a_session_start_captured_from_libsignal_agrees_with_ours() -> None:
    """libsignal 0.103's Alice started a session from a bundle of ours and stored its keys; our Bob
    derives the same from her message (tests/fixtures/libsignal-v4-session-start.json)."""
    import json
    from pathlib import Path

    from e2e.keys import PrivateKey, PublicKey
    from e2e.kyber import KyberPrivateKey, KyberPublicKey
    from e2e.primitives import chain_step, root_step

    document = json.loads(
        (Path(__file__).parent / "fixtures" / "libsignal-v4-session-start.json").read_text()
    )
    keys = {name: bytes.fromhex(value) for name, value in document["bob"].items()}
    identity = KeyPair(PrivateKey(keys["identity_private"]))
    signed = KeyPair(PrivateKey(keys["signed_pre_key_private"]))
    one_time = KeyPair(PrivateKey(keys["one_time_pre_key_private"]))
    kyber_pair = KyberKeyPair(KyberPrivateKey.deserialize(keys["kyber_secret_key"]))
    fields = document["bundle"]
    bundle = PreKeyBundle(
        registration_id=fields["registration_id"],
        device_id=fields["device_id"],
        identity_key=PublicKey.deserialize(bytes.fromhex(fields["identity_key"])),
        signed_pre_key_id=fields["signed_pre_key_id"],
        signed_pre_key=PublicKey.deserialize(bytes.fromhex(fields["signed_pre_key"])),
        signed_pre_key_signature=bytes.fromhex(fields["signed_pre_key_signature"]),
        pre_key_id=fields["pre_key_id"],
        pre_key=PublicKey.deserialize(bytes.fromhex(fields["pre_key"])),
        kem_pre_key_id=fields["kyber_pre_key_id"],
        kem_pre_key=KyberPublicKey.deserialize(bytes.fromhex(fields["kyber_pre_key"])),
        kem_pre_key_signature=bytes.fromhex(fields["kyber_pre_key_signature"]),
    )
    bundle.verify()
    assert bundle.identity_key == identity.public_key and bundle.kem_pre_key == kyber_pair.public_key

    body = bytes.fromhex(document["message"]["body"])
    assert document["message"]["type"] == MessageType.PREKEY and body[0] == 0x44
    message = PreKeySignalMessage.deserialize(body)
    assert message.kem_pre_key_id == fields["kyber_pre_key_id"] and message.pre_key_id == fields["pre_key_id"]
    assert message.message.pq_ratchet  # libsignal's SPQR field, opaque here
    secret = pqxdh_v4.respond(identity, signed, one_time, kyber_pair, message.initial_message())
    stored = document["libsignal_session"]
    assert stored["session_version"] == 4
    assert stored["alice_base_key"] == message.base_key.serialize().hex()
    assert stored["receiver_chain"] == [signed.public_key.serialize().hex(), secret.chain_key.key.hex()]
    root_key, chain_key = root_step(secret.root_key.key, signed.agree(message.message.ratchet_key))
    _, chain_key = chain_step(chain_key)  # libsignal stored its sending chain after one message
    assert stored["root_key"] == root_key.hex()
    assert stored["sender_chain"] == [message.message.ratchet_key.serialize().hex(), chain_key.hex()]


# -- malformed version-4 PreKeySignalMessages --------------------------------------------------------


def _v4_prekey_parts(rng: Rng) -> tuple[PreKeySignalMessage, KyberParty]:
    _, alice_record, bob, _ = _start(rng)
    return PreKeySignalMessage.deserialize(alice_record.encrypt(b"hello", rng).body), bob


def _reframe(message: PreKeySignalMessage, **changes: object) -> bytes:
    from e2e.wire import encode_prekey_signal_message

    fields: dict[str, object] = {
        "registration_id": message.registration_id,
        "pre_key_id": message.pre_key_id,
        "signed_pre_key_id": message.signed_pre_key_id,
        "serialized_base_key": message.base_key.serialize(),
        "serialized_identity_key": message.identity_key.serialize(),
        "serialized_message": message.message.serialized,
        "kem_pre_key_id": message.kem_pre_key_id,
        "serialized_kem_ciphertext": message.kem_ciphertext.serialize(),  # type: ignore[union-attr]
        "version": 4,
    }
    fields.update(changes)
    return encode_prekey_signal_message(**fields)  # type: ignore[arg-type]


def test_malformed_version_4_prekey_messages_are_decode_errors(rng: Rng) -> None:
    message, _ = _v4_prekey_parts(rng)
    assert _reframe(message) == message.serialized
    # Without the Kyber fields (framed as version 3, then relabelled 0x44).
    bare = _reframe(message, kem_pre_key_id=None, serialized_kem_ciphertext=None, version=3)
    with pytest.raises(DecodeError, match="Kyber prekey id"):
        PreKeySignalMessage.deserialize(b"\x44" + bare[1:])
    # A Kyber ciphertext with ML-KEM's type byte, or of the wrong length.
    ciphertext = message.kem_ciphertext.serialize()  # type: ignore[union-attr]
    for bad in (b"\x0a" + ciphertext[1:], ciphertext[:-1], ciphertext + b"\x00"):
        with pytest.raises(DecodeError):
            PreKeySignalMessage.deserialize(_reframe(message, serialized_kem_ciphertext=bad))
    # A version-4 PreKey message around a version-3 SignalMessage, and the reverse.
    inner_v3 = b"\x33" + message.message.serialized[1:]
    with pytest.raises(DecodeError, match="wraps a version-3"):
        PreKeySignalMessage.deserialize(_reframe(message, serialized_message=inner_v3))
    outer_v3 = _reframe(message, kem_pre_key_id=None, serialized_kem_ciphertext=None, version=3)
    with pytest.raises(DecodeError, match="wraps a version-4"):
        PreKeySignalMessage.deserialize(outer_v3)
    # The encoder refuses the same mixtures.
    with pytest.raises(ValueError):
        _reframe(message, kem_pre_key_id=None, serialized_kem_ciphertext=None)
    with pytest.raises(ValueError):
        PreKeySignalMessage.create(
            1,
            None,
            1,
            message.base_key,
            message.identity_key,
            message.message,
            5,
            ml_kem_encapsulate(KemKeyPair.generate(rng).public_key)[0],
        )


def test_version_4_signal_messages_with_bad_fields_are_decode_errors(rng: Rng) -> None:
    body, _, _ = _v4_message(rng, addresses=bytes(36))
    header_end = len(body) - 8
    # Field 6 longer than 64 bytes.
    long_addresses = body[: header_end - 38] + bytes((0x32, 65)) + bytes(65) + body[header_end:]
    with pytest.raises(DecodeError, match="addresses"):
        SignalMessage.deserialize(long_addresses)
    with pytest.raises(ValueError):
        _v4_message(rng, addresses=bytes(65))
    # A ciphertext that is not a whole number of AES blocks.
    _, mac_key, associated = _v4_message(rng)
    odd = encode_signal_message(
        mac_key, associated, KeyPair.generate(rng).public_key.serialize(), 0, 0, bytes(79), version=4
    )
    with pytest.raises(DecodeError, match="AES blocks"):
        SignalMessage.deserialize(odd)


def test_the_wrong_kind_of_kem_prekey_for_the_message_is_refused(rng: Rng) -> None:
    message, bob = _v4_prekey_parts(rng)
    with pytest.raises(InvalidKeyError, match="Kyber prekey"):
        SessionRecord().decrypt_prekey_message(
            message,
            bob.identity,
            bob.signed_pre_key,
            bob.one_time_pre_keys.get(message.pre_key_id or -1),
            rng,
            our_registration_id=bob.registration_id,
            our_kem_pre_key=KemKeyPair.generate(rng),
        )
    ml_kem_ciphertext, _ = ml_kem_encapsulate(KemKeyPair.generate(rng).public_key)
    initial = replace(message.initial_message(), kem_ciphertext=ml_kem_ciphertext)
    with pytest.raises(InvalidKeyError, match="ML-KEM"):
        pqxdh_v4.respond(bob.identity, bob.signed_pre_key, None, bob.kyber_lookup(500), initial)
    with pytest.raises(InvalidKeyError):
        pqxdh_v4.kdf_pqxdh_v4(bytes(96), bytes(31))


def test_a_record_that_ran_the_post_quantum_ratchet_does_not_start_states_without_it(rng: Rng) -> None:
    factory = HashChainFactory()
    alice = KyberParty.create_kyber(rng, 1000)
    bob = KyberParty.create_kyber(rng, 2000)
    record = SessionRecord.initiate(
        alice.identity, 1000, bob.kyber_bundle(rng, last_resort=True), rng, pq_ratchet_factory=factory
    )
    record.pq_ratchet_factory = None
    before = record.serialize()
    with pytest.raises(DowngradeError, match="post-quantum ratchet"):
        record.start_session(alice.identity, 1000, bob.kyber_bundle(rng, last_resort=True), rng)
    other = SessionRecord.initiate(KeyPair.generate(rng), 1001, bob.kyber_bundle(rng, last_resort=True), rng)
    with pytest.raises(DowngradeError, match="post-quantum ratchet"):
        bob.receive_v4(record, other.encrypt(b"hi", rng).body, rng)
    assert record.serialize() == before
    record.start_session(
        alice.identity, 1000, bob.kyber_bundle(rng, last_resort=True), rng, allow_downgrade=True
    )
    assert record.current_state is not None and record.current_state.pq_ratchet is None
