"""A small driver for python-axolotl, the independent libsignal v3 implementation we talk to.

python-axolotl (a Python port of libsignal-protocol-java's v3 code) keeps its keys and sessions in
stores and works on its own object types.  This module hides that behind the few operations a
conversation needs, speaking only in our types at its edge (:class:`e2e.x3dh.PreKeyBundle`, raw
bytes) so that a test can put it on either side of a conversation with our implementation:

* :meth:`AxolotlParty.bundle` publishes Bob's keys (identity, signed prekey, one one-time prekey)
  as our :class:`~e2e.x3dh.PreKeyBundle`;
* :meth:`AxolotlParty.start_session` is Alice processing such a bundle;
* :meth:`AxolotlParty.encrypt` returns ``(message_type, wire bytes)`` with libsignal's message
  type numbers (2 = WhisperMessage/SignalMessage, 3 = PreKeyWhisperMessage/PreKeySignalMessage);
* :meth:`AxolotlParty.decrypt` takes them back.

Keys are made from caller-supplied 32-byte scalars where it matters (identity keys), so that a
test can pick identities whose XEdDSA signatures take either value of the Edwards sign bit.
python-axolotl itself draws its base, ratchet and signature-nonce randomness from ``os.urandom``.
python-axolotl pads nothing of its own: it encrypts the bytes it is given with AES-256-CBC and
PKCS#7, as libsignal's v3 SessionCipher does.
"""

from __future__ import annotations

import os

import axolotl_curve25519
from axolotl.ecc.curve import Curve
from axolotl.ecc.djbec import DjbECPrivateKey, DjbECPublicKey
from axolotl.ecc.eckeypair import ECKeyPair
from axolotl.identitykey import IdentityKey
from axolotl.identitykeypair import IdentityKeyPair
from axolotl.protocol.ciphertextmessage import CiphertextMessage
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
from axolotl.protocol.whispermessage import WhisperMessage
from axolotl.sessionbuilder import SessionBuilder
from axolotl.sessioncipher import SessionCipher
from axolotl.state.prekeybundle import PreKeyBundle as AxolotlPreKeyBundle
from axolotl.state.prekeyrecord import PreKeyRecord
from axolotl.state.signedprekeyrecord import SignedPreKeyRecord
from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore

from e2e.keys import PublicKey
from e2e.x3dh import PreKeyBundle

__all__ = ["WHISPER_TYPE", "PREKEY_TYPE", "AxolotlParty", "axolotl_key_pair"]

WHISPER_TYPE: int = CiphertextMessage.WHISPER_TYPE
PREKEY_TYPE: int = CiphertextMessage.PREKEY_TYPE

# The name and device id under which each party files the other in its stores.
_REMOTE_NAME = "remote"
_REMOTE_DEVICE_ID = 1


def axolotl_key_pair(scalar: bytes | None = None) -> ECKeyPair:
    """A python-axolotl key pair from a 32-byte private scalar (clamped here), or a random one."""
    private = axolotl_curve25519.generatePrivateKey(scalar if scalar is not None else os.urandom(32))
    public = axolotl_curve25519.generatePublicKey(private)
    return ECKeyPair(DjbECPublicKey(public), DjbECPrivateKey(private))


def _their_point(key: PublicKey) -> DjbECPublicKey:
    return Curve.decodePoint(key.serialize(), 0)


def _our_key(point: DjbECPublicKey) -> PublicKey:
    return PublicKey.deserialize(bytes(point.serialize()))


class AxolotlParty:
    """One python-axolotl device talking to one remote device.

    ``identity_scalar`` fixes the identity key (32 bytes, clamped by python-axolotl); without it a
    random identity is drawn.  The party is either Bob (call :meth:`bundle`, then :meth:`decrypt`
    the first message) or Alice (call :meth:`start_session` with the remote bundle).
    """

    def __init__(
        self,
        identity_scalar: bytes | None = None,
        registration_id: int = 4242,
        signed_pre_key_id: int = 7,
        pre_key_id: int = 31,
    ) -> None:
        self.store = InMemoryAxolotlStore()
        identity = axolotl_key_pair(identity_scalar)
        identity_keys = self.store.identityKeyStore
        identity_keys.identityKeyPair = IdentityKeyPair(
            IdentityKey(identity.getPublicKey()), identity.getPrivateKey()
        )
        identity_keys.localRegistrationId = registration_id
        self.registration_id = registration_id
        self.signed_pre_key_id = signed_pre_key_id
        self.pre_key_id = pre_key_id
        self.cipher = SessionCipher(
            self.store, self.store, self.store, self.store, _REMOTE_NAME, _REMOTE_DEVICE_ID
        )

    @property
    def identity_key(self) -> PublicKey:
        """Our identity public key, in our own type."""
        return _our_key(self.store.getIdentityKeyPair().getPublicKey().getPublicKey())

    def bundle(self) -> PreKeyBundle:
        """Bob's side: make and store a signed prekey and one one-time prekey; return the bundle."""
        signed_pre_key = axolotl_key_pair()
        signature = Curve.calculateSignature(
            self.store.getIdentityKeyPair().getPrivateKey(), signed_pre_key.getPublicKey().serialize()
        )
        self.store.storeSignedPreKey(
            self.signed_pre_key_id,
            SignedPreKeyRecord(self.signed_pre_key_id, 0, signed_pre_key, signature),
        )
        pre_key = axolotl_key_pair()
        self.store.storePreKey(self.pre_key_id, PreKeyRecord(self.pre_key_id, pre_key))
        return PreKeyBundle(
            registration_id=self.registration_id,
            device_id=_REMOTE_DEVICE_ID,
            identity_key=self.identity_key,
            signed_pre_key_id=self.signed_pre_key_id,
            signed_pre_key=_our_key(signed_pre_key.getPublicKey()),
            signed_pre_key_signature=bytes(signature),
            pre_key_id=self.pre_key_id,
            pre_key=_our_key(pre_key.getPublicKey()),
        )

    def start_session(self, their_bundle: PreKeyBundle) -> None:
        """Alice's side: verify and process the remote bundle (python-axolotl's SessionBuilder)."""
        pre_key = _their_point(their_bundle.pre_key) if their_bundle.pre_key is not None else None
        bundle = AxolotlPreKeyBundle(
            their_bundle.registration_id,
            their_bundle.device_id,
            their_bundle.pre_key_id,
            pre_key,
            their_bundle.signed_pre_key_id,
            _their_point(their_bundle.signed_pre_key),
            their_bundle.signed_pre_key_signature,
            IdentityKey(_their_point(their_bundle.identity_key)),
        )
        builder = SessionBuilder(
            self.store, self.store, self.store, self.store, _REMOTE_NAME, _REMOTE_DEVICE_ID
        )
        builder.processPreKeyBundle(bundle)

    def has_pre_key(self) -> bool:
        """Whether the one-time prekey is still stored (python-axolotl deletes it after first use)."""
        return bool(self.store.containsPreKey(self.pre_key_id))

    def next_mac_key(self) -> bytes:
        """The MAC key python-axolotl will use for the next message it encrypts."""
        state = self.store.loadSession(_REMOTE_NAME, _REMOTE_DEVICE_ID).getSessionState()
        return bytes(state.getSenderChainKey().getMessageKeys().getMacKey())

    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]:
        """Encrypt ``plaintext``; returns libsignal's message type and the wire bytes."""
        message = self.cipher.encrypt(plaintext)
        return message.getType(), bytes(message.serialize())

    def decrypt(self, message_type: int, body: bytes) -> bytes:
        """Decrypt wire bytes of the given libsignal message type."""
        if message_type == PREKEY_TYPE:
            return bytes(self.cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=body)))
        if message_type == WHISPER_TYPE:
            return bytes(self.cipher.decryptMsg(WhisperMessage(serialized=body)))
        raise ValueError(f"unknown message type {message_type}")
