"""Our side of an interop conversation through the store API: SessionBuilder and SessionCipher
over an :class:`~e2e.memory_store.InMemoryProtocolStore`.

It speaks the interface of :class:`tests.interop.axolotl_peer.AxolotlParty` (``bundle``,
``start_session``, ``encrypt``, ``decrypt``) as :class:`tests.interop.our_peer.OurParty` does, but
keeps no keys of its own: the store holds the identity, the prekeys and the session (serialized
after every message), and the cipher looks prekeys up, checks the identity and spends the
one-time prekey, as python-axolotl's own ``SessionCipher`` does over its stores.
"""

from __future__ import annotations

from e2e.address import ProtocolAddress
from e2e.keys import KeyPair, PrivateKey, PublicKey, Rng
from e2e.memory_store import InMemoryProtocolStore
from e2e.records import PreKeyRecord, SignedPreKeyRecord
from e2e.session_cipher import SessionBuilder, SessionCipher, make_pre_key_bundle
from e2e.x3dh import PreKeyBundle

__all__ = ["StoreParty"]

REMOTE = ProtocolAddress("remote", 1)


class StoreParty:
    """One device of ours, on the store API, talking to one remote device (as Alice or as Bob)."""

    def __init__(
        self,
        rng: Rng,
        identity_scalar: bytes,
        registration_id: int = 2424,
        signed_pre_key_id: int = 9,
        pre_key_id: int = 13,
    ) -> None:
        self._rng = rng
        self.store = InMemoryProtocolStore(KeyPair(PrivateKey(identity_scalar)), registration_id)
        self.signed_pre_key_id = signed_pre_key_id
        self.pre_key_id = pre_key_id
        self.cipher = SessionCipher(self.store, REMOTE)

    @property
    def identity_key(self) -> PublicKey:
        return self.store.get_identity_key_pair().public_key

    def bundle(self) -> PreKeyBundle:
        """Bob's side: store a new signed prekey and one one-time prekey; publish them."""
        signed = KeyPair.generate(self._rng)
        signature = self.store.get_identity_key_pair().sign(signed.public_key.serialize(), self._rng)
        self.store.store_signed_pre_key(SignedPreKeyRecord(self.signed_pre_key_id, signed, signature, 0))
        self.store.store_pre_key(PreKeyRecord(self.pre_key_id, KeyPair.generate(self._rng)))
        return make_pre_key_bundle(
            self.store, 1, signed_pre_key_id=self.signed_pre_key_id, pre_key_id=self.pre_key_id
        )

    def start_session(self, their_bundle: PreKeyBundle) -> None:
        SessionBuilder(self.store, REMOTE).process_pre_key_bundle(their_bundle, self._rng)

    def has_pre_key(self) -> bool:
        return self.pre_key_id in self.store.pre_key_ids()

    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]:
        ciphertext = self.cipher.encrypt(plaintext, self._rng)
        return int(ciphertext.type), ciphertext.body

    def decrypt(self, message_type: int, body: bytes) -> bytes:
        return self.cipher.decrypt(body, message_type)
