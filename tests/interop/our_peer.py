"""Our side of an interop conversation: a device running this project's SessionRecord.

It speaks the same small interface as :class:`tests.interop.axolotl_peer.AxolotlParty`
(``bundle``, ``start_session``, ``encrypt``, ``decrypt``), doing what a client does around the
core: it keeps its identity, signed prekey and one-time prekey, looks the prekeys up by the ids a
PreKeySignalMessage names, and deletes the one-time prekey once a message has decrypted with it.

With ``persist=True`` the session goes through :meth:`SessionRecord.serialize` and
:meth:`SessionRecord.deserialize` after every operation, as a client that stores its state does,
so that the stored form is exercised against the other implementation too.
"""

from __future__ import annotations

from dataclasses import replace

from e2e.keys import KeyPair, PrivateKey, PublicKey, Rng
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage
from e2e.x3dh import PreKeyBundle

__all__ = ["OurParty"]


class OurParty:
    """One device of ours talking to one remote device (as Alice or as Bob)."""

    def __init__(
        self,
        rng: Rng,
        identity_scalar: bytes,
        registration_id: int = 2424,
        signed_pre_key_id: int = 9,
        pre_key_id: int = 13,
        persist: bool = False,
    ) -> None:
        self._rng = rng
        self.identity = KeyPair(PrivateKey(identity_scalar))
        self.registration_id = registration_id
        self.signed_pre_key_id = signed_pre_key_id
        self.pre_key_id = pre_key_id
        self.persist = persist
        self.signed_pre_key: KeyPair | None = None
        self.pre_keys: dict[int, KeyPair] = {}
        self.record = SessionRecord()

    @property
    def identity_key(self) -> PublicKey:
        return self.identity.public_key

    def bundle(self, one_time_pre_key: bool = True) -> PreKeyBundle:
        """Bob's side: a signed prekey (XEdDSA over ``0x05 ‖ SPK``) and, unless told otherwise (as
        when a server has run out of them), one one-time prekey."""
        self.signed_pre_key = KeyPair.generate(self._rng)
        pre_key = KeyPair.generate(self._rng)
        bundle = PreKeyBundle(
            registration_id=self.registration_id,
            device_id=1,
            identity_key=self.identity.public_key,
            signed_pre_key_id=self.signed_pre_key_id,
            signed_pre_key=self.signed_pre_key.public_key,
            signed_pre_key_signature=self.identity.sign(
                self.signed_pre_key.public_key.serialize(), self._rng
            ),
            pre_key_id=self.pre_key_id,
            pre_key=pre_key.public_key,
        )
        if not one_time_pre_key:
            return replace(bundle, pre_key_id=None, pre_key=None)
        self.pre_keys[self.pre_key_id] = pre_key
        return bundle

    def start_session(self, their_bundle: PreKeyBundle) -> None:
        """Alice's side: X3DH with the remote bundle; an existing session is archived, not lost."""
        self.record.start_session(self.identity, self.registration_id, their_bundle, self._rng)
        self._store()

    def has_pre_key(self) -> bool:
        return self.pre_key_id in self.pre_keys

    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]:
        ciphertext = self.record.encrypt(plaintext, self._rng)
        self._store()
        return int(ciphertext.type), ciphertext.body

    def decrypt(self, message_type: int, body: bytes) -> bytes:
        if message_type == MessageType.PREKEY:
            message = PreKeySignalMessage.deserialize(body)
            assert message.signed_pre_key_id == self.signed_pre_key_id and self.signed_pre_key is not None
            one_time = self.pre_keys.get(message.pre_key_id) if message.pre_key_id is not None else None
            plaintext = self.record.decrypt_prekey_message(
                message,
                self.identity,
                self.signed_pre_key,
                one_time,
                self._rng,
                our_registration_id=self.registration_id,
            )
            if message.pre_key_id is not None:
                self.pre_keys.pop(message.pre_key_id, None)
        elif message_type == MessageType.WHISPER:
            plaintext = self.record.decrypt(body, self._rng)
        else:
            raise ValueError(f"unknown message type {message_type}")
        self._store()
        return plaintext

    def _store(self) -> None:
        if self.persist:
            self.record = SessionRecord.deserialize(self.record.serialize())
