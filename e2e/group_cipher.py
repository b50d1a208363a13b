"""Group messages with Sender Keys: one encryption and one signature per message, whatever the group size.

What this module owns
---------------------
The four operations of libsignal's ``group_cipher.rs``, over a store of sender-key records:

* :meth:`GroupCipher.create_distribution_message` (libsignal's
  ``create_sender_key_distribution_message``): make our sender key for a distribution if there is
  none (a random 31-bit chain id, a random chain key at iteration 0, a fresh signing key pair) and
  return the :class:`~e2e.sender_key_messages.SenderKeyDistributionMessage` to hand each member over
  the pairwise sessions.  It describes the chain at its *current* iteration, so a member who joins
  later cannot read what was sent before.  :meth:`GroupCipher.rotate` makes a new chain instead
  (after a member leaves, say), kept in front of the old ones;
* :meth:`GroupCipher.process_distribution_message`: file another member's chain
  (``SenderKeyRecord.add_state``'s rules: a repeated distribution message does not rewind a chain);
* :meth:`GroupCipher.encrypt` (``group_encrypt``): the chain's next message key, AES-256-CBC with
  PKCS#7, a :class:`~e2e.sender_key_messages.SenderKeyMessage` signed with our signing key, then the
  chain steps on;
* :meth:`GroupCipher.decrypt` (``group_decrypt``), in this order: parse; check the distribution id;
  find the state by chain id; **verify the signature** before anything else is done with the
  message; find the message key (a stored one for a late message, or step the chain forward, at
  most :data:`~e2e.sender_key_state.MAX_FORWARD_JUMPS`); decrypt; only then commit the state change
  and store the record.

Records are kept per :class:`SenderKeyName`: (sender name, device id, distribution id), our own
chain under our own name.  :class:`SenderKeyStore` is the protocol a store implements;
:class:`InMemorySenderKeyStore` keeps serialized records in a dict.

Invariants
----------
* A failed decrypt (bad bytes, unknown chain, bad signature, duplicate, too far ahead, bad padding)
  raises a typed error and stores nothing: the record is changed only after the plaintext is in
  hand, and the store sees one ``store_sender_key`` call per successful operation.
* The framing (libsignal's or python-axolotl's) is fixed per :class:`GroupCipher` by the caller;
  a state made under one framing is never used for the other.

What this module does not know
------------------------------
Who is in a group, who may send to it, or how distribution messages travel: the caller sends the
distribution message over a pairwise session, and decides whose distribution messages to accept.
It draws no randomness of its own: every call that needs some takes ``rng``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from e2e.errors import DistributionMismatchError, NoSenderKeyError
from e2e.keys import KeyPair, Rng
from e2e.primitives import cbc_decrypt, cbc_encrypt
from e2e.sender_key_messages import (
    MAX_SENDER_KEY_CIPHERTEXT_LENGTH,
    SenderKeyDistributionMessage,
    SenderKeyFraming,
    SenderKeyMessage,
)
from e2e.sender_key_state import SenderChainKey, SenderKeyRecord, SenderKeyState

__all__ = [
    "SenderKeyName",
    "SenderKeyStore",
    "InMemorySenderKeyStore",
    "GroupCipher",
]


@dataclass(frozen=True, slots=True)
class SenderKeyName:
    """Whose sender key: the sender's name and device id, and the distribution (one per group)."""

    sender_name: str
    device_id: int
    distribution_id: uuid.UUID

    def __post_init__(self) -> None:
        if not isinstance(self.sender_name, str) or not self.sender_name:
            raise ValueError("a sender name is a non-empty string")
        if not isinstance(self.device_id, int) or isinstance(self.device_id, bool) or self.device_id < 0:
            raise ValueError("a device id is a non-negative integer")
        if not isinstance(self.distribution_id, uuid.UUID):
            raise ValueError("a distribution id is a uuid.UUID")


class SenderKeyStore(Protocol):
    """Where sender-key records are kept, one per :class:`SenderKeyName`.

    ``load_sender_key`` returns ``None`` for a name never stored.  The group cipher may change the
    record it loaded and then passes it to ``store_sender_key``; it never stores a record after a
    failed operation.
    """

    def load_sender_key(self, name: SenderKeyName) -> SenderKeyRecord | None: ...

    def store_sender_key(self, name: SenderKeyName, record: SenderKeyRecord) -> None: ...


class InMemorySenderKeyStore:
    """A :class:`SenderKeyStore` in a dict of serialized records (each load is a fresh object)."""

    def __init__(self) -> None:
        self._records: dict[SenderKeyName, bytes] = {}

    def load_sender_key(self, name: SenderKeyName) -> SenderKeyRecord | None:
        data = self._records.get(name)
        return None if data is None else SenderKeyRecord.deserialize(data)

    def store_sender_key(self, name: SenderKeyName, record: SenderKeyRecord) -> None:
        self._records[name] = record.serialize()

    def serialized(self, name: SenderKeyName) -> bytes | None:
        """The stored bytes of ``name``'s record, to compare states before and after."""
        return self._records.get(name)

    def __repr__(self) -> str:
        return f"InMemorySenderKeyStore({len(self._records)} records)"


class GroupCipher:
    """Sender-key group messaging over ``store`` in one framing (libsignal's or python-axolotl's)."""

    def __init__(self, store: SenderKeyStore, framing: SenderKeyFraming = SenderKeyFraming.LIBSIGNAL) -> None:
        if not isinstance(framing, SenderKeyFraming):
            raise TypeError("framing is a SenderKeyFraming")
        self.store = store
        self.framing = framing

    # -- the sender's side ---------------------------------------------------------------------

    def _new_state(self, rng: Rng) -> SenderKeyState:
        # libsignal's order of draws: the chain id (31 bits, as libsignal-protocol-java has it),
        # the chain key, the signing key pair.
        chain_id = int.from_bytes(rng(4), "big") >> 1
        chain_key = SenderChainKey(0, rng(32))
        key_pair = KeyPair.generate(rng)
        return SenderKeyState(self.framing, chain_id, chain_key, key_pair.public_key, key_pair)

    def _distribution(self, name: SenderKeyName, state: SenderKeyState) -> SenderKeyDistributionMessage:
        return SenderKeyDistributionMessage(
            self.framing,
            name.distribution_id if self.framing is SenderKeyFraming.LIBSIGNAL else None,
            state.chain_id,
            state.chain_key.iteration,
            state.chain_key.key,
            state.signing_key,
        )

    def create_distribution_message(self, our_name: SenderKeyName, rng: Rng) -> SenderKeyDistributionMessage:
        """Our sender key's distribution message, making the sender key first if there is none."""
        record = self.store.load_sender_key(our_name)
        if record is None or record.is_empty():
            record = SenderKeyRecord([self._new_state(rng)])
            self.store.store_sender_key(our_name, record)
        state = record.current_state()
        assert state is not None
        self._check_own(state)
        return self._distribution(our_name, state)

    def rotate(self, our_name: SenderKeyName, rng: Rng) -> SenderKeyDistributionMessage:
        """Make a new sender chain for ``our_name`` (kept in front of the old ones) and return its
        distribution message.  Whoever held the old chain key reads nothing sent on the new one."""
        record = self.store.load_sender_key(our_name) or SenderKeyRecord()
        state = self._new_state(rng)
        while record.state_for_chain_id(state.chain_id) is not None:
            state = self._new_state(rng)
        record.add_state(state)
        self.store.store_sender_key(our_name, record)
        return self._distribution(our_name, state)

    def _check_own(self, state: SenderKeyState) -> KeyPair:
        if state.framing is not self.framing:
            raise NoSenderKeyError(f"the sender key was made for the {state.framing.name} framing")
        if state.signing_key_pair is None:
            raise NoSenderKeyError("this sender key is another member's: we cannot sign with it")
        return state.signing_key_pair

    def encrypt(self, our_name: SenderKeyName, plaintext: bytes, rng: Rng) -> bytes:
        """One group message: AES-256-CBC under the chain's next message key, signed (64 bytes of
        ``rng``).  Raises :class:`NoSenderKeyError` when we have no sender key of our own here."""
        if not isinstance(plaintext, bytes):
            raise TypeError("the plaintext is bytes")
        if len(plaintext) >= MAX_SENDER_KEY_CIPHERTEXT_LENGTH:
            raise ValueError(f"a group message carries less than {MAX_SENDER_KEY_CIPHERTEXT_LENGTH} bytes")
        record = self.store.load_sender_key(our_name)
        state = None if record is None else record.current_state()
        if record is None or state is None:
            raise NoSenderKeyError(f"no sender key for {our_name}: create a distribution message first")
        signing_key_pair = self._check_own(state)
        message_key, next_chain_key = state.chain_key.step()
        iv, cipher_key = message_key.iv_and_cipher_key
        message = SenderKeyMessage.create(
            self.framing,
            our_name.distribution_id if self.framing is SenderKeyFraming.LIBSIGNAL else None,
            state.chain_id,
            message_key.iteration,
            cbc_encrypt(cipher_key, iv, plaintext),
            signing_key_pair.private_key,
            rng,
        )
        state.chain_key = next_chain_key
        self.store.store_sender_key(our_name, record)
        return message.serialized

    # -- the members' side -----------------------------------------------------------------------

    def process_distribution_message(
        self, their_name: SenderKeyName, data: bytes
    ) -> SenderKeyDistributionMessage:
        """File the chain a member handed us under ``their_name``; return the parsed message.

        Raises :class:`~e2e.errors.DecodeError` for malformed bytes and
        :class:`DistributionMismatchError` when (in libsignal's framing) the message is for another
        distribution than ``their_name``'s; the store is untouched then.
        """
        message = SenderKeyDistributionMessage.deserialize(data, self.framing)
        if message.distribution_id is not None and message.distribution_id != their_name.distribution_id:
            raise DistributionMismatchError(
                f"a distribution message for distribution {message.distribution_id}, "
                f"given for {their_name.distribution_id}"
            )
        record = self.store.load_sender_key(their_name) or SenderKeyRecord()
        record.add_state(
            SenderKeyState(
                self.framing,
                message.chain_id,
                SenderChainKey(message.iteration, message.chain_key),
                message.signing_key,
            )
        )
        self.store.store_sender_key(their_name, record)
        return message

    def decrypt(self, their_name: SenderKeyName, data: bytes) -> bytes:
        """Decrypt a group message from ``their_name``; commit the state change only on success.

        Raises, with the store untouched: :class:`~e2e.errors.DecodeError` (malformed, truncated,
        oversized), :class:`DistributionMismatchError`, :class:`NoSenderKeyError` (no record or no
        state for the message's chain), :class:`~e2e.errors.InvalidSignatureError`,
        :class:`~e2e.errors.DuplicateMessageError`, :class:`~e2e.errors.TooManySkippedMessagesError`
        and :class:`~e2e.errors.InvalidMessageError` (the ciphertext does not decrypt).
        """
        message = SenderKeyMessage.deserialize(data, self.framing)
        if message.distribution_id is not None and message.distribution_id != their_name.distribution_id:
            raise DistributionMismatchError(
                f"a group message for distribution {message.distribution_id}, "
                f"given for {their_name.distribution_id}"
            )
        record = self.store.load_sender_key(their_name)
        state = None if record is None else record.state_for_chain_id(message.chain_id)
        if record is None or state is None or state.framing is not self.framing:
            raise NoSenderKeyError(f"no sender key of {their_name} with chain id {message.chain_id}")
        message.verify(state.signing_key)
        step = state.plan_receive(message.iteration)
        iv, cipher_key = step.message_key.iv_and_cipher_key
        plaintext = cbc_decrypt(cipher_key, iv, message.ciphertext)
        state.commit(step)
        self.store.store_sender_key(their_name, record)
        return plaintext

    def __repr__(self) -> str:
        return f"GroupCipher({self.framing.name}, store={self.store!r})"
