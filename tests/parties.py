"""Two-party setups for session tests: identities, prekeys, bundles, and a finished handshake."""

from __future__ import annotations

from dataclasses import dataclass, field

from e2e.keys import KeyPair, Rng
from e2e.ratchet import DEFAULT_LIMITS, Limits
from e2e.session import Ciphertext, SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage
from e2e.x3dh import PreKeyBundle


@dataclass
class Party:
    """One device: its identity, registration id, one signed prekey and some one-time prekeys."""

    identity: KeyPair
    registration_id: int
    signed_pre_key: KeyPair
    signed_pre_key_id: int
    one_time_pre_keys: dict[int, KeyPair] = field(default_factory=dict)

    @classmethod
    def create(cls, rng: Rng, registration_id: int, one_time: int = 2) -> Party:
        party = cls(KeyPair.generate(rng), registration_id, KeyPair.generate(rng), registration_id + 1)
        for number in range(one_time):
            party.one_time_pre_keys[100 + number] = KeyPair.generate(rng)
        return party

    def bundle(self, rng: Rng, with_one_time: bool = True) -> PreKeyBundle:
        signature = self.identity.sign(self.signed_pre_key.public_key.serialize(), rng)
        pre_key_id = min(self.one_time_pre_keys) if with_one_time and self.one_time_pre_keys else None
        return PreKeyBundle(
            registration_id=self.registration_id,
            device_id=1,
            identity_key=self.identity.public_key,
            signed_pre_key_id=self.signed_pre_key_id,
            signed_pre_key=self.signed_pre_key.public_key,
            signed_pre_key_signature=signature,
            pre_key_id=pre_key_id,
            pre_key=None if pre_key_id is None else self.one_time_pre_keys[pre_key_id].public_key,
        )

    def receive(self, record: SessionRecord, ciphertext: Ciphertext, rng: Rng) -> bytes:
        """What a client does with an incoming message: look keys up by id, decrypt, spend the OPK."""
        if ciphertext.type == MessageType.WHISPER:
            return record.decrypt(ciphertext.body, rng)
        message = PreKeySignalMessage.deserialize(ciphertext.body)
        if message.signed_pre_key_id != self.signed_pre_key_id:
            raise KeyError(f"no signed prekey {message.signed_pre_key_id}")
        one_time = None
        if message.pre_key_id is not None and not record.has_state_for_base_key(message.base_key):
            one_time = self.one_time_pre_keys[message.pre_key_id]  # KeyError when unknown or spent
        plaintext = record.decrypt_prekey_message(
            message,
            self.identity,
            self.signed_pre_key,
            one_time,
            rng,
            our_registration_id=self.registration_id,
        )
        if one_time is not None:
            del self.one_time_pre_keys[message.pre_key_id]  # type: ignore[arg-type]
        return plaintext


def established(rng: Rng, limits: Limits = DEFAULT_LIMITS) -> tuple[SessionRecord, SessionRecord]:
    """Alice's and Bob's records after Alice's first message and Bob's reply."""
    alice_party, bob_party = Party.create(rng, 1000), Party.create(rng, 2000)
    alice = SessionRecord.initiate(alice_party.identity, 1000, bob_party.bundle(rng), rng, limits)
    bob = SessionRecord(limits)
    assert bob_party.receive(bob, alice.encrypt(b"hello", rng), rng) == b"hello"
    assert alice.decrypt(bob.encrypt(b"welcome", rng).body, rng) == b"welcome"
    return alice, bob
