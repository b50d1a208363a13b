"""The implementations the core benchmark compares, each behind the same small interface.

Every column of the table is one :class:`Peer`.  A peer runs *batches*: ``setups(n)`` builds ``n``
fresh sessions, and after :meth:`Peer.start` has built one conversation, ``burst(n, plaintext)``
and ``ping_pong(n, plaintext)`` push ``n`` messages through it.  A batch is the unit the harness
times, so that a peer whose API is asynchronous (Syndace's) runs a whole batch inside one event
loop call instead of paying for the loop on every message.

What each operation includes, for every peer alike:

* ``setups``: fresh identity keys for Alice and Bob; Bob's bundle (a signed prekey with its
  signature and one one-time prekey); Alice verifying it and encrypting a 64-byte first message;
  Bob decrypting that message.
* ``burst``: Alice encrypts, Bob decrypts, ``n`` times; no replies, so no DH ratchet step.
* ``burst_stored``: the burst with both sides' session state serialized and loaded back after
  every message, in each library's own stored form.
* ``ping_pong``: the direction alternates, so every message starts a new sending chain (a DH
  ratchet step with a fresh key pair and two Diffie-Hellman operations).
* ``pqxdh_setups``: ``setups`` with a signed ML-KEM-1024 prekey in the bundle (this project only).
* ``group_send(n, plaintext, members)``, after ``start_group(members)``: the sender's CPU for ``n``
  messages to a group of ``members`` other devices with Sender Keys: per message one chain step,
  one AES-256-CBC encryption and one XEdDSA signature, whatever the size of the group (the relay
  fans the one ciphertext out).  Every member has processed the distribution message beforehand.
* ``fanout(n, plaintext, members)``, after ``start_fanout(members)``: the same group message sent
  the 1:1 way, one Double Ratchet encryption per member over established pairwise sessions (each
  with one reply received, so the messages are ordinary ones).  Receivers' work is not counted in
  either row.
* Messages are checked to decrypt to what was sent.  Where a peer has a wire format, its bytes are
  produced and parsed (ours, python-axolotl, oldmemo's configuration, vodozemac); Syndace's generic
  configuration has none of its own and passes its message objects directly.

The floor peers (:class:`OurPrimitives` and the primitive layers of the others) time the single
operations everything above is built from.  Each peer module is imported only when its peer is
asked for, so a peer that does not import is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

PLAINTEXT_64 = bytes(range(64))

Batch = Callable[[int], None]


class Peer:
    """One implementation under test.  Subclasses fill in the four operations they support."""

    name: ClassVar[str]
    label: ClassVar[str]

    def cpu_clock(self) -> float:
        """The CPU seconds the timed work runs on: this process's, unless the peer runs elsewhere."""
        return time.process_time()

    def setups(self, n: int) -> None:
        raise NotImplementedError

    def pqxdh_setups(self, n: int) -> None:
        """Session setups with PQXDH (a signed ML-KEM-1024 prekey in the bundle), where supported."""
        raise NotImplementedError

    def start(self) -> None:
        """Build the one conversation that :meth:`burst` and :meth:`ping_pong` use."""
        raise NotImplementedError

    def v4_setups(self, n: int) -> None:
        """Version-4 session setups (Signal's PQXDH with a Kyber1024 prekey, then SPQR), where supported."""
        raise NotImplementedError

    def start_v4(self) -> None:
        """Build a version-4 conversation with SPQR for :meth:`burst_v4`, :meth:`ping_pong_v4`."""
        raise NotImplementedError

    def burst_v4(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def ping_pong_v4(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def spqr_bytes(self, messages: int) -> float:
        """The bytes SPQR's field 5 (with its tag and length) adds to a message, averaged over a
        ping-pong of ``messages`` messages on a new version-4 conversation."""
        raise NotImplementedError

    def burst(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def ping_pong(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def burst_stored(self, n: int, plaintext: bytes) -> None:
        """:meth:`burst`, with both sides' session state serialized and loaded back after every
        message, as a client that persists its sessions does."""
        raise NotImplementedError

    def start_group(self, members: int) -> None:
        """Make our sender key for a group of ``members`` other devices and hand it to each."""
        raise NotImplementedError

    def group_send(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def group_send_stored(self, n: int, plaintext: bytes) -> None:
        """:meth:`group_send` with the sender-key record serialized and loaded back per message."""
        raise NotImplementedError

    def start_fanout(self, members: int) -> None:
        """Establish a pairwise session with each of ``members`` devices."""
        raise NotImplementedError

    def fanout(self, n: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def primitives(self) -> dict[str, Batch]:
        """Floor rows this peer's own primitive layer can fill (row name → batch)."""
        return {}


class SyncPeer(Peer):
    """A peer with a synchronous API: everything follows from a conversation's two directions."""

    def new_conversation(self) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
        """Set up one session (including Bob decrypting Alice's first message); return the
        functions that send one message from Alice to Bob and from Bob to Alice."""
        raise NotImplementedError

    def setups(self, n: int) -> None:
        for _ in range(n):
            self.new_conversation()

    def start(self) -> None:
        self._a_to_b, self._b_to_a = self.new_conversation()
        # One reply, so that Alice's messages are ordinary ones and not first-message types.
        self._b_to_a(PLAINTEXT_64)
        self._a_to_b(PLAINTEXT_64)

    def burst(self, n: int, plaintext: bytes) -> None:
        a_to_b = self._a_to_b
        for _ in range(n):
            a_to_b(plaintext)

    def ping_pong(self, n: int, plaintext: bytes) -> None:
        a_to_b, b_to_a = self._a_to_b, self._b_to_a
        for _ in range(n // 2):
            b_to_a(plaintext)
            a_to_b(plaintext)
        if n % 2:
            b_to_a(plaintext)

    # new_conversation() leaves here the function that makes Alice's next message without
    # delivering it, for the fan-out rows.
    _alice_encrypt: Callable[[bytes], object]

    def start_fanout(self, members: int) -> None:
        senders = []
        for _ in range(members):
            _a_to_b, b_to_a = self.new_conversation()
            b_to_a(PLAINTEXT_64)
            senders.append(self._alice_encrypt)
        self._fanout_senders = senders

    def fanout(self, n: int, plaintext: bytes) -> None:
        senders = self._fanout_senders
        for _ in range(n):
            for encrypt in senders:
                encrypt(plaintext)


def _repeat(operation: Callable[[], object]) -> Batch:
    """A batch that calls ``operation`` ``n`` times."""

    def run(n: int) -> None:
        for _ in range(n):
            operation()

    return run


def _check(received: bytes, sent: bytes) -> None:
    if received != sent:
        raise AssertionError("a message decrypted to something else")


# --------------------------------------------------------------------------------------------
# This project


class Ours(SyncPeer):
    name = "ours"
    label = "this project"

    def __init__(self) -> None:
        from e2e import kem, keys, kyber, session, wire, x3dh
        from e2e.spqr import SpqrRatchetFactory

        self._KyberKeyPair = kyber.KyberKeyPair
        self._spqr = SpqrRatchetFactory()
        self._SignalMessage = wire.SignalMessage
        self._KemKeyPair = kem.KemKeyPair
        self._KeyPair = keys.KeyPair
        self._SessionRecord = session.SessionRecord
        self._PreKeySignalMessage = wire.PreKeySignalMessage
        self._PreKeyBundle = x3dh.PreKeyBundle
        self._PREKEY = wire.MessageType.PREKEY

    def pqxdh_setups(self, n: int) -> None:
        for _ in range(n):
            self.new_conversation(pqxdh=True)

    def v4_setups(self, n: int) -> None:
        for _ in range(n):
            self.new_conversation(v4=True)

    def start_v4(self) -> None:
        self._v4_a_to_b, self._v4_b_to_a = self.new_conversation(v4=True)
        self._v4_b_to_a(PLAINTEXT_64)
        self._v4_a_to_b(PLAINTEXT_64)

    def burst_v4(self, n: int, plaintext: bytes) -> None:
        a_to_b = self._v4_a_to_b
        for _ in range(n):
            a_to_b(plaintext)

    def ping_pong_v4(self, n: int, plaintext: bytes) -> None:
        a_to_b, b_to_a = self._v4_a_to_b, self._v4_b_to_a
        for _ in range(n // 2):
            b_to_a(plaintext)
            a_to_b(plaintext)
        if n % 2:
            b_to_a(plaintext)

    def spqr_bytes(self, messages: int) -> float:
        self.new_conversation(v4=True)
        alice, bob = self._records
        rng, deserialize = os.urandom, self._SignalMessage.deserialize
        total = 0
        for i in range(messages):
            sender, receiver = (bob, alice) if i % 2 == 0 else (alice, bob)
            body = sender.encrypt(PLAINTEXT_64, rng).body
            field = deserialize(body).pq_ratchet
            # Field 5 on the wire: its tag, its length (one byte below 128) and the bytes.
            total += 2 + len(field) if field else 0
            _check(receiver.decrypt(body, rng), PLAINTEXT_64)
        return total / messages

    def new_conversation(
        self, pqxdh: bool = False, v4: bool = False
    ) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
        rng = os.urandom
        key_pair = self._KeyPair.generate
        bob_identity = key_pair(rng)
        signed_pre_key = key_pair(rng)
        one_time_pre_key = key_pair(rng)
        kem_pre_key: Any = None
        if v4:
            kem_pre_key = self._KyberKeyPair.generate(rng)
        elif pqxdh:
            kem_pre_key = self._KemKeyPair.generate(rng)
        factory = self._spqr if v4 else None
        bundle = self._PreKeyBundle(
            registration_id=2,
            device_id=1,
            identity_key=bob_identity.public_key,
            signed_pre_key_id=1,
            signed_pre_key=signed_pre_key.public_key,
            signed_pre_key_signature=bob_identity.sign(signed_pre_key.public_key.serialize(), rng),
            pre_key_id=1,
            pre_key=one_time_pre_key.public_key,
            kem_pre_key_id=None if kem_pre_key is None else 1,
            kem_pre_key=None if kem_pre_key is None else kem_pre_key.public_key,
            kem_pre_key_signature=None
            if kem_pre_key is None
            else bob_identity.sign(kem_pre_key.public_key.serialize(), rng),
        )
        alice_identity = key_pair(rng)
        alice = self._SessionRecord.initiate(alice_identity, 1, bundle, rng, pq_ratchet_factory=factory)
        first = alice.encrypt(PLAINTEXT_64, rng)
        bob = self._SessionRecord(pq_ratchet_factory=factory)
        message = self._PreKeySignalMessage.deserialize(first.body)
        _check(
            bob.decrypt_prekey_message(
                message,
                bob_identity,
                signed_pre_key,
                one_time_pre_key,
                rng,
                our_registration_id=2,
                our_kem_pre_key=kem_pre_key,
            ),
            PLAINTEXT_64,
        )
        prekey_type = self._PREKEY
        deserialize = self._PreKeySignalMessage.deserialize
        self._records = [alice, bob]
        self._alice_encrypt = lambda plaintext: alice.encrypt(plaintext, rng)

        def a_to_b(plaintext: bytes) -> None:
            ciphertext = alice.encrypt(plaintext, rng)
            if ciphertext.type == prekey_type:
                received = bob.decrypt_prekey_message(
                    deserialize(ciphertext.body),
                    bob_identity,
                    signed_pre_key,
                    None,
                    rng,
                    our_registration_id=2,
                )
            else:
                received = bob.decrypt(ciphertext.body, rng)
            _check(received, plaintext)

        def b_to_a(plaintext: bytes) -> None:
            _check(alice.decrypt(bob.encrypt(plaintext, rng).body, rng), plaintext)

        return a_to_b, b_to_a

    def burst_stored(self, n: int, plaintext: bytes) -> None:
        # The conversation's records, as start() left them; each side's state goes through its
        # stored form after every message.
        alice, bob = self._records
        rng = os.urandom
        serialize, deserialize = self._SessionRecord.serialize, self._SessionRecord.deserialize
        for _ in range(n):
            body = alice.encrypt(plaintext, rng).body
            alice = deserialize(serialize(alice))
            _check(bob.decrypt(body, rng), plaintext)
            bob = deserialize(serialize(bob))
        self._records = [alice, bob]

    def start_group(self, members: int) -> None:
        import uuid

        from e2e.group_cipher import GroupCipher, SenderKeyName

        group = uuid.uuid4()
        self._group_name = SenderKeyName("sender", 1, group)
        self._group_cipher = GroupCipher(_ObjectSenderKeyStore())
        offer = self._group_cipher.create_distribution_message(self._group_name, os.urandom).serialize()
        self._group_members = []
        for _ in range(members):
            member = GroupCipher(_ObjectSenderKeyStore())
            member.process_distribution_message(self._group_name, offer)
            self._group_members.append(member)
        # One message, decrypted by every member, proves the group works before it is timed.
        first = self._group_cipher.encrypt(self._group_name, PLAINTEXT_64, os.urandom)
        for member in self._group_members:
            _check(member.decrypt(self._group_name, first), PLAINTEXT_64)

    def group_send(self, n: int, plaintext: bytes) -> None:
        encrypt, name, rng = self._group_cipher.encrypt, self._group_name, os.urandom
        for _ in range(n):
            encrypt(name, plaintext, rng)

    def group_send_stored(self, n: int, plaintext: bytes) -> None:
        from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore

        # The same sender key, in a store that keeps only serialized records.
        store = InMemorySenderKeyStore()
        store.store_sender_key(self._group_name, self._group_cipher.store.load_sender_key(self._group_name))
        encrypt, name, rng = GroupCipher(store).encrypt, self._group_name, os.urandom
        for _ in range(n):
            encrypt(name, plaintext, rng)


class _ObjectSenderKeyStore:
    """A sender-key store holding record objects, as the 1:1 rows hold session records."""

    def __init__(self) -> None:
        self._records: dict[object, Any] = {}

    def load_sender_key(self, name: object) -> Any:
        return self._records.get(name)

    def store_sender_key(self, name: object, record: Any) -> None:
        self._records[name] = record


class OurPrimitives(Peer):
    """The primitive layer of this project: e2e.keys and e2e.primitives (over ``cryptography``, PyNaCl
    and :mod:`hashlib`)."""

    name = "ours-primitives"
    label = "this project"

    def primitives(self) -> dict[str, Batch]:
        from e2e.keys import KeyPair

        rng = os.urandom
        ours = KeyPair.generate(rng)
        theirs = KeyPair.generate(rng).public_key
        message = theirs.serialize()
        signature = ours.sign(message, rng)

        return {
            "dh": _repeat(lambda: ours.agree(theirs)),
            # The public key is derived when first asked for.
            "keygen": _repeat(lambda: KeyPair.generate(rng).public_key),
            "sign": _repeat(lambda: ours.sign(message, rng)),
            "verify": _repeat(lambda: ours.public_key.verify(message, signature)),
            "message_crypto_64": _message_crypto(PLAINTEXT_64),
            "message_crypto_64k": _message_crypto(os.urandom(64 * 1024)),
        }


def _message_crypto(plaintext: bytes) -> Batch:
    """Per message, both sides, with this project's primitive layer and no protocol logic: the
    chain step (two HMACs), the message keys (HKDF-80), AES-256-CBC/PKCS#7 encryption, the
    truncated HMAC-SHA256 over the ciphertext, then the same keys again, the MAC check and the
    decryption."""
    from e2e.primitives import HmacKey, cbc_decrypt, cbc_encrypt, chain_step, derive_message_keys

    chain_key = os.urandom(32)

    def run(n: int) -> None:
        for _ in range(n):
            seed, _following = chain_step(chain_key)
            keys = derive_message_keys(seed)
            ciphertext = cbc_encrypt(keys[:32], keys[64:], plaintext)
            mac = HmacKey(keys[32:64]).digest(ciphertext)[:8]
            seed, _following = chain_step(chain_key)
            keys = derive_message_keys(seed)
            if not hmac.compare_digest(HmacKey(keys[32:64]).digest(ciphertext)[:8], mac):
                raise AssertionError("MAC mismatch")
            _check(cbc_decrypt(keys[:32], keys[64:], ciphertext), plaintext)

    return run


# --------------------------------------------------------------------------------------------
# python-axolotl 0.2.3


class Axolotl(SyncPeer):
    name = "axolotl"
    label = "python-axolotl 0.2.3"

    def __init__(self) -> None:
        import axolotl  # noqa: F401 - fail early with the real import error

    def new_conversation(self) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
        from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
        from axolotl.protocol.whispermessage import WhisperMessage
        from axolotl.sessionbuilder import SessionBuilder
        from axolotl.sessioncipher import SessionCipher
        from axolotl.state.prekeybundle import PreKeyBundle
        from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore
        from axolotl.util.keyhelper import KeyHelper

        # InMemoryAxolotlStore draws a fresh identity key pair and registration id.
        bob_store, alice_store = InMemoryAxolotlStore(), InMemoryAxolotlStore()
        signed_pre_key = KeyHelper.generateSignedPreKey(bob_store.getIdentityKeyPair(), 1)
        pre_key = KeyHelper.generatePreKeys(1, 1)[0]
        bob_store.storeSignedPreKey(1, signed_pre_key)
        bob_store.storePreKey(pre_key.getId(), pre_key)
        bundle = PreKeyBundle(
            bob_store.getLocalRegistrationId(),
            1,
            pre_key.getId(),
            pre_key.getKeyPair().getPublicKey(),
            1,
            signed_pre_key.getKeyPair().getPublicKey(),
            signed_pre_key.getSignature(),
            bob_store.getIdentityKeyPair().getPublicKey(),
        )
        stores = (alice_store,) * 4
        SessionBuilder(*stores, "bob", 1).processPreKeyBundle(bundle)
        alice = SessionCipher(*stores, "bob", 1)
        bob = SessionCipher(*(bob_store,) * 4, "alice", 1)
        first = alice.encrypt(PLAINTEXT_64).serialize()
        _check(bytes(bob.decryptPkmsg(PreKeyWhisperMessage(serialized=first))), PLAINTEXT_64)
        self._alice_encrypt = alice.encrypt

        def a_to_b(plaintext: bytes) -> None:
            message = alice.encrypt(plaintext)
            if message.getType() == 3:
                received = bob.decryptPkmsg(PreKeyWhisperMessage(serialized=message.serialize()))
            else:
                received = bob.decryptMsg(WhisperMessage(serialized=message.serialize()))
            _check(bytes(received), plaintext)

        def b_to_a(plaintext: bytes) -> None:
            body = bob.encrypt(plaintext).serialize()
            _check(bytes(alice.decryptMsg(WhisperMessage(serialized=body))), plaintext)

        return a_to_b, b_to_a

    def burst_stored(self, n: int, plaintext: bytes) -> None:
        # python-axolotl's session store keeps every session serialized and parses it back for
        # each operation: its burst already is this row.
        self.burst(n, plaintext)

    def start_group(self, members: int) -> None:
        from axolotl.axolotladdress import AxolotlAddress
        from axolotl.groups.groupcipher import GroupCipher
        from axolotl.groups.groupsessionbuilder import GroupSessionBuilder
        from axolotl.groups.senderkeyname import SenderKeyName
        from axolotl.protocol.senderkeydistributionmessage import SenderKeyDistributionMessage
        from axolotl.tests.groups.inmemorysenderkeystore import InMemorySenderKeyStore

        name = SenderKeyName("group", AxolotlAddress("sender", 1))
        store = InMemorySenderKeyStore()
        offer = GroupSessionBuilder(store).create(name).serialize()
        self._group_cipher = GroupCipher(store, name)
        members_ciphers = []
        for _ in range(members):
            member_store = InMemorySenderKeyStore()
            GroupSessionBuilder(member_store).process(name, SenderKeyDistributionMessage(serialized=offer))
            members_ciphers.append(GroupCipher(member_store, name))
        first = self._group_cipher.encrypt(PLAINTEXT_64)
        for member in members_ciphers:
            _check(bytes(member.decrypt(first)), PLAINTEXT_64)

    def group_send(self, n: int, plaintext: bytes) -> None:
        encrypt = self._group_cipher.encrypt
        for _ in range(n):
            encrypt(plaintext)

    def group_send_stored(self, n: int, plaintext: bytes) -> None:
        # Its sender-key store always keeps serialized records: group_send already is this row.
        self.group_send(n, plaintext)

    def primitives(self) -> dict[str, Batch]:
        # libsignal's C curve25519 code, as python-axolotl calls it.
        import axolotl_curve25519 as curve

        ours = curve.generatePrivateKey(os.urandom(32))
        theirs = curve.generatePublicKey(curve.generatePrivateKey(os.urandom(32)))
        message = b"\x05" + theirs
        signature = curve.calculateSignature(os.urandom(64), ours, message)
        ours_public = curve.generatePublicKey(ours)

        def verify() -> None:
            if curve.verifySignature(ours_public, message, signature) != 0:
                raise AssertionError("signature rejected")

        return {
            "dh": _repeat(lambda: curve.calculateAgreement(ours, theirs)),
            "keygen": _repeat(lambda: curve.generatePublicKey(curve.generatePrivateKey(os.urandom(32)))),
            "sign": _repeat(lambda: curve.calculateSignature(os.urandom(64), ours, message)),
            "verify": _repeat(verify),
        }


# --------------------------------------------------------------------------------------------
# Syndace's x3dh + doubleratchet 1.3.0


class Syndace(Peer):
    """x3dh + doubleratchet with the libraries' recommended building blocks (generic configuration)."""

    name = "syndace"
    label = "Syndace x3dh+doubleratchet 1.3.0"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._configure()

    def _configure(self) -> None:
        import x3dh
        from doubleratchet import DoubleRatchet, Header
        from doubleratchet.recommended import (
            aead_aes_hmac,
            diffie_hellman_ratchet_curve25519,
            kdf_hkdf,
            kdf_separate_hmacs,
        )
        from doubleratchet.recommended.crypto_provider import HashFunction

        class State(x3dh.BaseState):
            @staticmethod
            def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
                return b"\x05" + pub

        class RootChainKDF(kdf_hkdf.KDF):
            @staticmethod
            def _get_hash_function() -> HashFunction:
                return HashFunction.SHA_256

            @staticmethod
            def _get_info() -> bytes:
                return b"bench root chain"

        class MessageChainKDF(kdf_separate_hmacs.KDF):
            @staticmethod
            def _get_hash_function() -> HashFunction:
                return HashFunction.SHA_256

        class AEAD(aead_aes_hmac.AEAD):
            @staticmethod
            def _get_hash_function() -> HashFunction:
                return HashFunction.SHA_256

            @staticmethod
            def _get_info() -> bytes:
                return b"bench message keys"

        class Ratchet(DoubleRatchet):
            @staticmethod
            def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
                return (
                    associated_data
                    + header.ratchet_pub
                    + header.previous_sending_chain_length.to_bytes(8, "big")
                    + header.sending_chain_length.to_bytes(8, "big")
                )

        self._state_class = State
        self._info = b"bench x3dh"
        self._identity_format = x3dh.IdentityKeyFormat.CURVE_25519
        self._ratchet_class = Ratchet
        self._ratchet_arguments = (
            diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet,
            RootChainKDF,
            MessageChainKDF,
            b"\x02\x01",
            1000,
            1000,
            AEAD,
        )
        self._hash = x3dh.HashFunction.SHA_256

    # Hooks for the oldmemo configuration, which carries messages as bytes.
    def _to_wire(self, message: Any) -> Any:
        return message

    def _from_wire(self, data: Any) -> Any:
        return data

    async def _new_conversation(self) -> tuple[Any, Any, bytes]:
        bob_state = self._state_class.create(self._identity_format, self._hash, self._info)
        bob_state.generate_pre_keys(1)
        alice_state = self._state_class.create(self._identity_format, self._hash, self._info)
        bundle = bob_state.bundle
        shared_secret, associated_data, header = await alice_state.get_shared_secret_active(bundle)
        alice, first = await self._ratchet_class.encrypt_initial_message(
            *self._ratchet_arguments,
            shared_secret,
            bundle.signed_pre_key,
            PLAINTEXT_64,
            associated_data,
        )
        bob_secret, bob_associated_data, signed_pre_key = await bob_state.get_shared_secret_passive(header)
        bob, received = await self._ratchet_class.decrypt_initial_message(
            *self._ratchet_arguments,
            bob_secret,
            signed_pre_key.priv,
            self._from_wire(self._to_wire(first)),
            bob_associated_data,
        )
        _check(received, PLAINTEXT_64)
        return alice, bob, associated_data

    async def _send(self, sender: Any, receiver: Any, associated_data: bytes, plaintext: bytes) -> None:
        message = self._from_wire(self._to_wire(await sender.encrypt_message(plaintext, associated_data)))
        _check(await receiver.decrypt_message(message, associated_data), plaintext)

    def setups(self, n: int) -> None:
        async def run() -> None:
            for _ in range(n):
                await self._new_conversation()

        self._loop.run_until_complete(run())

    def start(self) -> None:
        async def run() -> None:
            self._alice, self._bob, self._ad = await self._new_conversation()
            await self._send(self._bob, self._alice, self._ad, PLAINTEXT_64)
            await self._send(self._alice, self._bob, self._ad, PLAINTEXT_64)

        self._loop.run_until_complete(run())

    def burst(self, n: int, plaintext: bytes) -> None:
        async def run() -> None:
            for _ in range(n):
                await self._send(self._alice, self._bob, self._ad, plaintext)

        self._loop.run_until_complete(run())

    def burst_stored(self, n: int, plaintext: bytes) -> None:
        # Both ratchets through the libraries' JSON form (text, as json.dumps writes it) and back.
        import json

        def reload(ratchet: Any) -> Any:
            stored = json.dumps(ratchet.json)
            return self._ratchet_class.from_json(json.loads(stored), *self._ratchet_arguments)

        async def run() -> None:
            for _ in range(n):
                await self._send(self._alice, self._bob, self._ad, plaintext)
                self._alice, self._bob = reload(self._alice), reload(self._bob)

        self._loop.run_until_complete(run())

    def ping_pong(self, n: int, plaintext: bytes) -> None:
        async def run() -> None:
            for index in range(n):
                if index % 2:
                    await self._send(self._alice, self._bob, self._ad, plaintext)
                else:
                    await self._send(self._bob, self._alice, self._ad, plaintext)

        self._loop.run_until_complete(run())

    def primitives(self) -> dict[str, Batch]:
        # Syndace's libxeddsa (C, over libsodium): the layer both its libraries call.
        import xeddsa

        # As x3dh does: sign with the private key forced to Edwards sign bit 0 (spec-literal XEdDSA),
        # verify against the Edwards form of the Montgomery public key with sign bit 0.
        ours = xeddsa.seed_to_priv(os.urandom(32))
        signing_key = xeddsa.priv_force_sign(ours, False)
        theirs = xeddsa.priv_to_curve25519_pub(os.urandom(32))
        message = b"\x05" + theirs
        signature = xeddsa.ed25519_priv_sign(signing_key, message)
        ours_curve25519 = xeddsa.priv_to_curve25519_pub(ours)

        def verify() -> None:
            ours_ed25519 = xeddsa.curve25519_pub_to_ed25519_pub(ours_curve25519, False)
            if not xeddsa.ed25519_verify(signature, ours_ed25519, message):
                raise AssertionError("signature rejected")

        return {
            "dh": _repeat(lambda: xeddsa.x25519(ours, theirs)),
            "keygen": _repeat(lambda: xeddsa.priv_to_curve25519_pub(os.urandom(32))),
            "sign": _repeat(lambda: xeddsa.ed25519_priv_sign(signing_key, message)),
            "verify": _repeat(verify),
        }


class SyndaceOldmemo(Syndace):
    """The same libraries in oldmemo's libsignal-v3 configuration (v3 KDF labels, 8-byte MAC, protobuf)."""

    name = "oldmemo"
    label = "Syndace, libsignal-v3 config (oldmemo 2.1.0)"

    def _configure(self) -> None:
        import x3dh
        from doubleratchet.recommended import diffie_hellman_ratchet_curve25519
        from oldmemo.oldmemo import (
            AEADImpl,
            DoubleRatchetImpl,
            MessageChainKDFImpl,
            RootChainKDFImpl,
            StateImpl,
        )

        self._state_class = StateImpl  # type: ignore[assignment]
        self._info = StateImpl.INFO
        self._identity_format = x3dh.IdentityKeyFormat.CURVE_25519
        self._ratchet_class = DoubleRatchetImpl  # type: ignore[assignment]
        self._ratchet_arguments = (  # type: ignore[assignment]
            diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet,
            RootChainKDFImpl,
            MessageChainKDFImpl,
            DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT,
            1000,
            1000,
            AEADImpl,
        )
        self._hash = x3dh.HashFunction.SHA_256

    def primitives(self) -> dict[str, Batch]:
        return {}


# --------------------------------------------------------------------------------------------
# vodozemac (Rust Olm)


class Vodozemac(SyncPeer):
    """Olm, not Signal's protocol: a compiled speed reference.  Bob's one-time key is signed by his
    Ed25519 key and Alice checks it, as Matrix clients do, to stand for the signed prekey."""

    name = "vodozemac"
    label = "vodozemac 0.10.0 (Rust Olm)"

    def __init__(self) -> None:
        import vodozemac

        self._vodozemac = vodozemac

    def new_conversation(self) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
        v = self._vodozemac
        bob_account, alice_account = v.Account(), v.Account()
        bob_account.generate_one_time_keys(1)
        one_time_key = next(iter(bob_account.one_time_keys.values()))
        signature = bob_account.sign(one_time_key.to_bytes())
        bob_account.mark_keys_as_published()
        bob_account.ed25519_key.verify_signature(one_time_key.to_bytes(), signature)
        alice = alice_account.create_outbound_session(bob_account.curve25519_key, one_time_key)
        first = alice.encrypt(PLAINTEXT_64)
        bob, received = bob_account.create_inbound_session(
            alice_account.curve25519_key, v.AnyOlmMessage.from_parts(*first.to_parts()).to_pre_key()
        )
        _check(received, PLAINTEXT_64)
        from_parts = v.AnyOlmMessage.from_parts
        self._sessions = [alice, bob]

        def a_to_b(plaintext: bytes) -> None:
            _check(bob.decrypt(from_parts(*alice.encrypt(plaintext).to_parts())), plaintext)

        def b_to_a(plaintext: bytes) -> None:
            _check(alice.decrypt(from_parts(*bob.encrypt(plaintext).to_parts())), plaintext)

        return a_to_b, b_to_a

    def burst_stored(self, n: int, plaintext: bytes) -> None:
        # vodozemac's stored form is its pickle: the session encrypted under a 32-byte key.
        alice, bob = self._sessions
        pickle_key = bytes(32)
        from_pickle = self._vodozemac.Session.from_pickle
        from_parts = self._vodozemac.AnyOlmMessage.from_parts
        for _ in range(n):
            message = from_parts(*alice.encrypt(plaintext).to_parts())
            alice = from_pickle(alice.pickle(pickle_key), pickle_key)
            _check(bob.decrypt(message), plaintext)
            bob = from_pickle(bob.pickle(pickle_key), pickle_key)
        self._sessions = [alice, bob]


# --------------------------------------------------------------------------------------------
# libsignal 0.103 (Rust, through its Node bindings), the group rows only


class Libsignal(Peer):
    """libsignal as Signal ships it, in the interop tests' Node peer (``make node`` installs it).

    Its CPU is the Node process's, read from the peer before and after each batch; a batch is one
    request that runs ``groupEncrypt`` ``n`` times.  Its sender-key store keeps libsignal's
    serialized records, so each send also parses and re-serializes the record, as Signal's clients'
    stores do.  The 1:1 rows need sessions, which the peer does not run yet.
    """

    name = "libsignal"
    label = "libsignal 0.103 (Rust, via Node)"

    def __init__(self) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from interop.node_peer import Address, NodePeer

        self._peer = NodePeer()
        self._address = Address("sender", 1)
        self._groups = 0

    def cpu_clock(self) -> float:
        return float(self._peer.call("cpu_time")["seconds"])

    def close(self) -> None:
        """Stop the Node peer (it also stops by itself when this process exits)."""
        self._peer.close()

    def start_group(self, members: int) -> None:
        import base64
        import uuid

        self._groups += 1
        self._party = f"sender-{self._groups}"
        self._distribution = str(uuid.uuid4())
        self._peer.create_identity(self._party)
        offer = self._peer.sender_key_distribution_create(self._party, self._address, self._distribution)
        first = self._peer.group_encrypt(self._party, self._address, self._distribution, PLAINTEXT_64)
        for number in range(members):
            member = f"{self._party}-member-{number}"
            self._peer.create_identity(member)
            self._peer.sender_key_distribution_process(member, self._address, offer)
            _check(self._peer.group_decrypt(member, self._address, first), PLAINTEXT_64)
        self._plaintext = base64.b64encode(PLAINTEXT_64).decode()

    def group_send(self, n: int, plaintext: bytes) -> None:
        import base64

        self._peer.call(
            "bench_group_encrypt",
            party=self._party,
            sender=self._address.to_json(),
            distribution_id=self._distribution,
            plaintext=base64.b64encode(plaintext).decode(),
            count=n,
        )

    def group_send_stored(self, n: int, plaintext: bytes) -> None:
        # The peer's store keeps libsignal's serialized records: group_send already is this row.
        self.group_send(n, plaintext)


PEERS: dict[str, type[Peer]] = {
    peer.name: peer for peer in (Ours, Axolotl, Syndace, SyndaceOldmemo, Vodozemac, Libsignal, OurPrimitives)
}
