"""Sender-key state: one sender's chains for one group, and the record that keeps up to five of them.

What this module owns
---------------------
The state a member keeps per (sender, device, distribution), with libsignal's names
(``rust/protocol/src/sender_keys.rs``) and limits (``consts.rs``):

* :class:`SenderChainKey`: the symmetric chain of Sender Keys.  From chain key ``CK`` at iteration
  ``i`` the message-key seed is ``HMAC-SHA256(CK, 0x01)`` and the next chain key, at ``i + 1``, is
  ``HMAC-SHA256(CK, 0x02)``, the same ``KDF_CK`` the Double Ratchet uses (Double Ratchet §5.2);
* :class:`SenderMessageKey`: the keys of message ``i``: ``HKDF-SHA256(salt = 32 zero bytes, seed,
  info = "WhisperGroup", 48)`` split as IV (first 16 bytes) ‖ AES-256 key (next 32);
* :class:`SenderKeyState`: one chain: its id, its :class:`SenderChainKey`, the signing key that
  signs its messages (the key pair when it is our own chain, the public key when it is someone
  else's), the framing its messages use, and the message keys kept for messages that have not
  arrived yet;
* :class:`SenderKeyRecord`: up to :data:`MAX_SENDER_KEY_STATES` states for one (sender,
  distribution), newest first, as a sender that rotates its key leaves older chains whose late
  messages may still arrive; and its versioned storage format.

Theory, and what it does not give
---------------------------------
There is no Diffie-Hellman step in a sender chain: each message key comes from a hash of the
previous chain key.  That gives forward secrecy along the chain (a stolen chain key at iteration
``i`` does not reveal keys of earlier messages, once their keys are deleted) but **no
post-compromise security**: whoever learns a chain key can compute every later message key of that
chain until the sender makes a new sender key and distributes it.  The signature keeps members
from forging each other's messages: every member holds the chain key, so only the signing key, which
only the sender has the private half of, tells a message from the sender apart from one made by
another member.

Invariants
----------
* A stored message key is for an iteration below the chain's current one, at most
  :data:`MAX_MESSAGE_KEYS` are kept per state (the oldest are dropped first, as libsignal does), and
  a key is deleted the moment it is used, so a replay finds nothing and is a duplicate.
* A receive is computed first (:meth:`SenderKeyState.plan_receive`, which changes nothing) and
  applied afterwards (:meth:`SenderKeyState.commit`), so the group cipher commits only once the
  message has decrypted.
* An iteration more than :data:`MAX_FORWARD_JUMPS` ahead of the chain is refused before any key is
  derived.

Storage format, version 1
-------------------------
``"G" ‖ 0x01 ‖ protobuf{1: state (repeated, newest first)}`` where a state is
``{1: framing (1 libsignal, 2 axolotl), 2: chain id, 3: iteration, 4: chain key (32),
5: signing public key (0x05 ‖ 32), 6: signing private key (32, our own chains only),
7: message key (repeated, oldest first) {1: iteration, 2: seed (32)}}``.  Reading refuses more
than :data:`MAX_SENDER_KEY_STATES` states, more than :data:`MAX_MESSAGE_KEYS` keys in a state, a key
at or above the chain's iteration or listed twice, a private key that does not match its public
key, and everything :mod:`e2e.records` refuses.

Secrets
-------
Chain keys, message-key seeds and the private signing key never appear in a ``repr``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from e2e import protobuf
from e2e.errors import (
    DecodeError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    StateFormatError,
    TooManySkippedMessagesError,
)
from e2e.keys import KEY_LENGTH, KeyPair, PrivateKey, PublicKey
from e2e.primitives import chain_step, derive_group_message_keys
from e2e.records import SENDER_KEY_RECORD_KIND, check_header, header
from e2e.sender_key_messages import SenderKeyFraming

__all__ = [
    "MAX_FORWARD_JUMPS",
    "MAX_MESSAGE_KEYS",
    "MAX_SENDER_KEY_STATES",
    "GROUP_INFO",
    "SenderChainKey",
    "SenderMessageKey",
    "SenderKeyState",
    "SenderKeyRecord",
    "ReceiveStep",
]

MAX_FORWARD_JUMPS: Final = 25_000
"""How far ahead of a chain a message's iteration may be (libsignal's ``MAX_FORWARD_JUMPS``)."""

MAX_MESSAGE_KEYS: Final = 2_000
"""Message keys kept per chain for messages not yet arrived (libsignal's ``MAX_MESSAGE_KEYS``)."""

MAX_SENDER_KEY_STATES: Final = 5
"""Chains kept per (sender, distribution) (libsignal's ``MAX_SENDER_KEY_STATES``)."""

GROUP_INFO: Final = b"WhisperGroup"
"""The HKDF info string of sender message keys."""

_UINT32_MAX: Final = 0xFFFF_FFFF
_FRAMING_CODES: Final = {SenderKeyFraming.LIBSIGNAL: 1, SenderKeyFraming.AXOLOTL: 2}
_FRAMINGS: Final = {code: framing for framing, code in _FRAMING_CODES.items()}
_STATE_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.VARINT),
    3: protobuf.Field(protobuf.VARINT),
    4: protobuf.Field(protobuf.LEN),
    5: protobuf.Field(protobuf.LEN),
    6: protobuf.Field(protobuf.LEN),
    7: protobuf.Field(protobuf.LEN, repeated=True),
}
_KEY_SCHEMA: Final = {1: protobuf.Field(protobuf.VARINT), 2: protobuf.Field(protobuf.LEN)}
_RECORD_SCHEMA: Final = {1: protobuf.Field(protobuf.LEN, repeated=True)}


@dataclass(frozen=True, slots=True)
class SenderMessageKey:
    """The keys of message ``iteration`` of a sender chain, derived from its 32-byte ``seed``."""

    iteration: int
    seed: bytes

    @property
    def iv_and_cipher_key(self) -> tuple[bytes, bytes]:
        """``HKDF(0×32, seed, "WhisperGroup", 48)`` split as the 16-byte IV and the 32-byte AES key."""
        derived = derive_group_message_keys(self.seed)
        return derived[:16], derived[16:]

    def __repr__(self) -> str:
        return f"SenderMessageKey(iteration={self.iteration}, seed=<redacted>)"


@dataclass(frozen=True, slots=True)
class SenderChainKey:
    """A sender chain key ``CK`` at ``iteration``: immutable; :meth:`next` is the chain's step."""

    iteration: int
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_LENGTH:
            raise ValueError(f"a chain key is {KEY_LENGTH} bytes")
        if not isinstance(self.iteration, int) or not 0 <= self.iteration <= _UINT32_MAX:
            raise ValueError("an iteration is an unsigned 32-bit integer")

    def step(self) -> tuple[SenderMessageKey, SenderChainKey]:
        """This iteration's message key and the chain key of the next iteration."""
        if self.iteration == _UINT32_MAX:
            raise InvalidMessageError("the sender chain is exhausted (iteration 2**32 - 1)")
        seed, next_key = chain_step(self.key)
        return SenderMessageKey(self.iteration, seed), SenderChainKey(self.iteration + 1, next_key)

    def message_key(self) -> SenderMessageKey:
        """This iteration's message key (seed ``HMAC(CK, 0x01)``)."""
        return SenderMessageKey(self.iteration, chain_step(self.key)[0])

    def next(self) -> SenderChainKey:
        """The chain key of the next iteration (``HMAC(CK, 0x02)``)."""
        return self.step()[1]

    def __repr__(self) -> str:
        return f"SenderChainKey(iteration={self.iteration}, key=<redacted>)"


@dataclass(frozen=True, slots=True)
class ReceiveStep:
    """What receiving one message would change in a state, computed without changing it.

    ``message_key`` decrypts the message.  Either a stored key is used up (``used_stored``) or the
    chain moves to ``next_chain_key`` and the keys of the iterations it skipped are stored
    (``skipped``, oldest first; only the newest :data:`MAX_MESSAGE_KEYS` are kept).
    """

    message_key: SenderMessageKey
    used_stored: bool
    next_chain_key: SenderChainKey | None
    skipped: tuple[SenderMessageKey, ...]

    def __repr__(self) -> str:
        return (
            f"ReceiveStep(iteration={self.message_key.iteration}, used_stored={self.used_stored}, "
            f"skipped={len(self.skipped)})"
        )


class SenderKeyState:
    """One sender chain: ``chain_id``, ``chain_key``, the signing key and the stored message keys.

    ``signing_key_pair`` is set only on the sender's own state; other members hold
    ``signing_key`` (its public half) alone.
    """

    __slots__ = ("framing", "chain_id", "chain_key", "signing_key", "signing_key_pair", "_message_keys")

    def __init__(
        self,
        framing: SenderKeyFraming,
        chain_id: int,
        chain_key: SenderChainKey,
        signing_key: PublicKey,
        signing_key_pair: KeyPair | None = None,
        message_keys: dict[int, bytes] | None = None,
    ) -> None:
        if not isinstance(framing, SenderKeyFraming):
            raise TypeError("framing is a SenderKeyFraming")
        if not isinstance(chain_id, int) or not 0 <= chain_id <= _UINT32_MAX:
            raise ValueError("a chain id is an unsigned 32-bit integer")
        if signing_key_pair is not None and signing_key_pair.public_key != signing_key:
            raise InvalidKeyError("the signing key pair does not match the signing key")
        self.framing = framing
        self.chain_id = chain_id
        self.chain_key = chain_key
        self.signing_key = signing_key
        self.signing_key_pair = signing_key_pair
        # Iteration -> message-key seed, in the order the keys were stored (oldest first).
        self._message_keys: dict[int, bytes] = dict(message_keys or {})

    @property
    def iteration(self) -> int:
        """The iteration of the chain's next message."""
        return self.chain_key.iteration

    def stored_iterations(self) -> list[int]:
        """The iterations whose message keys are stored, oldest first."""
        return list(self._message_keys)

    def plan_receive(self, iteration: int) -> ReceiveStep:
        """The message key for ``iteration`` and what using it changes; changes nothing itself.

        Raises :class:`DuplicateMessageError` for an iteration below the chain whose key is not
        stored (used already, or dropped), and :class:`TooManySkippedMessagesError` for one more
        than :data:`MAX_FORWARD_JUMPS` ahead.
        """
        current = self.chain_key.iteration
        if iteration < current:
            seed = self._message_keys.get(iteration)
            if seed is None:
                raise DuplicateMessageError(
                    f"sender chain {self.chain_id}: iteration {iteration} was received already "
                    f"(or its key is gone); the chain is at {current}"
                )
            return ReceiveStep(SenderMessageKey(iteration, seed), True, None, ())
        if iteration - current > MAX_FORWARD_JUMPS:
            raise TooManySkippedMessagesError(
                f"sender chain {self.chain_id}: iteration {iteration} is {iteration - current} ahead "
                f"of {current}, beyond the limit of {MAX_FORWARD_JUMPS}"
            )
        if iteration == _UINT32_MAX:
            raise InvalidMessageError("the sender chain is exhausted (iteration 2**32 - 1)")
        # Walk the chain on bare bytes; only the newest MAX_MESSAGE_KEYS skipped keys survive.
        key = self.chain_key.key
        skipped: deque[SenderMessageKey] = deque(maxlen=MAX_MESSAGE_KEYS)
        for skipped_iteration in range(current, iteration):
            seed, key = chain_step(key)
            skipped.append(SenderMessageKey(skipped_iteration, seed))
        seed, next_key = chain_step(key)
        return ReceiveStep(
            SenderMessageKey(iteration, seed), False, SenderChainKey(iteration + 1, next_key), tuple(skipped)
        )

    def commit(self, step: ReceiveStep) -> None:
        """Apply a :class:`ReceiveStep` computed from this state (after the message decrypted)."""
        if step.used_stored:
            del self._message_keys[step.message_key.iteration]
            return
        assert step.next_chain_key is not None
        for key in step.skipped:
            self._message_keys[key.iteration] = key.seed
        while len(self._message_keys) > MAX_MESSAGE_KEYS:
            del self._message_keys[next(iter(self._message_keys))]
        self.chain_key = step.next_chain_key

    def copy(self) -> SenderKeyState:
        """An independent copy (the keys themselves are immutable)."""
        return SenderKeyState(
            self.framing,
            self.chain_id,
            self.chain_key,
            self.signing_key,
            self.signing_key_pair,
            self._message_keys,
        )

    def _encode(self) -> bytes:
        parts = [
            protobuf.encode_uint_field(1, _FRAMING_CODES[self.framing]),
            protobuf.encode_uint_field(2, self.chain_id),
            protobuf.encode_uint_field(3, self.chain_key.iteration),
            protobuf.encode_bytes_field(4, self.chain_key.key),
            protobuf.encode_bytes_field(5, self.signing_key.serialize()),
        ]
        if self.signing_key_pair is not None:
            parts.append(protobuf.encode_bytes_field(6, self.signing_key_pair.private_key.serialize()))
        for iteration, seed in self._message_keys.items():
            parts.append(
                protobuf.encode_bytes_field(
                    7, protobuf.encode_uint_field(1, iteration) + protobuf.encode_bytes_field(2, seed)
                )
            )
        return b"".join(parts)

    @classmethod
    def _decode(cls, data: bytes) -> SenderKeyState:
        fields = protobuf.parse(data, _STATE_SCHEMA)
        code = protobuf.get_uint(fields, 1, "framing")
        framing = _FRAMINGS.get(code)
        if framing is None:
            raise StateFormatError(f"unknown sender-key framing {code}")
        chain_id = protobuf.get_uint(fields, 2, "chain id", _UINT32_MAX)
        iteration = protobuf.get_uint(fields, 3, "iteration", _UINT32_MAX)
        key = protobuf.get_bytes(fields, 4, "chain key")
        if len(key) != KEY_LENGTH:
            raise StateFormatError(f"a chain key is {KEY_LENGTH} bytes")
        signing_key = PublicKey.deserialize(protobuf.get_bytes(fields, 5, "signing key"))
        key_pair = None
        if 6 in fields:
            private = protobuf.get_bytes(fields, 6, "signing private key")
            if len(private) != KEY_LENGTH:
                raise StateFormatError(f"a signing private key is {KEY_LENGTH} bytes")
            key_pair = KeyPair(PrivateKey(private), signing_key)
        entries = protobuf.get_repeated_bytes(fields, 7)
        if len(entries) > MAX_MESSAGE_KEYS:
            raise StateFormatError(f"a sender-key state keeps at most {MAX_MESSAGE_KEYS} message keys")
        message_keys: dict[int, bytes] = {}
        for entry in entries:
            key_fields = protobuf.parse(entry, _KEY_SCHEMA)
            stored = protobuf.get_uint(key_fields, 1, "message key iteration", _UINT32_MAX)
            seed = protobuf.get_bytes(key_fields, 2, "message key seed")
            if len(seed) != KEY_LENGTH or stored >= iteration or stored in message_keys:
                raise StateFormatError("a stored message key out of place")
            message_keys[stored] = seed
        return cls(framing, chain_id, SenderChainKey(iteration, key), signing_key, key_pair, message_keys)

    def __repr__(self) -> str:
        own = ", own" if self.signing_key_pair is not None else ""
        return (
            f"SenderKeyState({self.framing.name}, chain_id={self.chain_id}, iteration={self.iteration}, "
            f"signing_key={self.signing_key!r}{own}, stored_keys={len(self._message_keys)})"
        )


class SenderKeyRecord:
    """Every chain kept for one (sender, device, distribution), newest first, at most five."""

    __slots__ = ("_states",)

    def __init__(self, states: list[SenderKeyState] | None = None) -> None:
        states = list(states or [])
        if len(states) > MAX_SENDER_KEY_STATES:
            raise ValueError(f"a sender-key record keeps at most {MAX_SENDER_KEY_STATES} states")
        self._states = states

    @property
    def states(self) -> tuple[SenderKeyState, ...]:
        """The states, newest first."""
        return tuple(self._states)

    def __iter__(self) -> Iterator[SenderKeyState]:
        return iter(tuple(self._states))

    def is_empty(self) -> bool:
        return not self._states

    def current_state(self) -> SenderKeyState | None:
        """The newest state: the one a sender encrypts with."""
        return self._states[0] if self._states else None

    def state_for_chain_id(self, chain_id: int) -> SenderKeyState | None:
        """The state of chain ``chain_id``, if this record keeps it."""
        for state in self._states:
            if state.chain_id == chain_id:
                return state
        return None

    def add_state(self, state: SenderKeyState) -> SenderKeyState:
        """Put a chain in front, as libsignal's ``add_sender_key_state`` does; return the kept state.

        A chain already kept with the same id and signing key keeps its progress (a repeated
        distribution message cannot rewind it, so it cannot make old messages decrypt twice) and
        moves to the front.  A chain with the same id but another signing key is replaced.  Then
        the oldest states beyond :data:`MAX_SENDER_KEY_STATES` are dropped.
        """
        kept = next(
            (
                existing
                for existing in self._states
                if existing.chain_id == state.chain_id and existing.signing_key == state.signing_key
            ),
            None,
        )
        states = [existing for existing in self._states if existing.chain_id != state.chain_id]
        front = kept if kept is not None else state
        self._states = [front, *states][:MAX_SENDER_KEY_STATES]
        return front

    def copy(self) -> SenderKeyRecord:
        """An independent copy of the record and its states."""
        return SenderKeyRecord([state.copy() for state in self._states])

    def serialize(self) -> bytes:
        """Storage format 1 (module docstring)."""
        return header(SENDER_KEY_RECORD_KIND) + b"".join(
            protobuf.encode_bytes_field(1, state._encode()) for state in self._states
        )

    @classmethod
    def deserialize(cls, data: bytes) -> SenderKeyRecord:
        """Read storage format 1; anything else raises :class:`StateFormatError`."""
        body = check_header(data, SENDER_KEY_RECORD_KIND)
        try:
            entries = protobuf.get_repeated_bytes(protobuf.parse(body, _RECORD_SCHEMA), 1)
            if len(entries) > MAX_SENDER_KEY_STATES:
                raise StateFormatError(f"a sender-key record keeps at most {MAX_SENDER_KEY_STATES} states")
            states = [SenderKeyState._decode(entry) for entry in entries]
        except StateFormatError:
            raise
        except (DecodeError, InvalidKeyError, ValueError) as error:
            raise StateFormatError(f"stored sender-key record: {error}") from None
        if len({state.chain_id for state in states}) != len(states):
            raise StateFormatError("a stored sender-key record lists a chain id twice")
        return cls(states)

    def __repr__(self) -> str:
        return f"SenderKeyRecord({list(self._states)!r})"
