"""SPQR's message-key chain: one symmetric ratchet per epoch and direction.

What this module owns
---------------------
:class:`Chain`, which turns the braid's epoch secrets into one 32-byte key per message
(Signal's ``spqr`` crate, ``chain.rs``; the Double Ratchet specification's post-quantum
extension calls this SPQR's "message key" that is mixed into each Double Ratchet message key).

* Start (:meth:`Chain.new`): ``HKDF-SHA256(salt = 0³², ikm = auth_key,
  info = "Signal PQ Ratchet V1 Chain  Start", 96)`` (two spaces before ``Start``, as the crate
  has it) gives ``next_root ‖ K_A2B ‖ K_B2A``: epoch 0's two chain keys.  Alice's sending chain
  (direction A2B) starts at ``K_A2B`` and is Bob's receiving chain, and the other way round.
* New epoch ``e`` with secret ``s`` (:meth:`Chain.add_epoch`): ``HKDF-SHA256(salt = next_root,
  ikm = s, info = "Signal PQ Ratchet V1 Chain Add Epoch", 96)``, split the same way.
* Step (one message): the counter ``ctr`` goes up by one, then ``HKDF-SHA256(salt = 0³², ikm =
  next, info = BE32(ctr) ‖ "Signal PQ Ratchet V1 Chain Next", 64)`` gives the new ``next`` and the
  key for message number ``ctr``.  Message indices therefore start at 1.

Keys of epoch ``e`` protect the messages that carry epoch number ``e + 1`` in their SPQR
header (a message names the braid epoch it is working on; the chain lags one behind).

Out of order, replays, limits
-----------------------------
A receiving chain can jump forward, keeping the keys it skips so late messages still decrypt:
at most :attr:`ChainParams.max_jump` steps at once (25,000, libsignal's ``MAX_FORWARD_JUMPS``;
beyond: :class:`~e2e.spqr.errors.SpqrKeyJumpError`), and it keeps skipped keys no further than
:attr:`ChainParams.max_ooo_keys` (2,000, libsignal's ``MAX_MESSAGE_KEYS``) behind the newest
(older: :class:`~e2e.spqr.errors.SpqrKeyTrimmedError`), pruning them once it holds
``max_ooo_keys · 1.1 + 1``.  A key is handed out once; asking again raises
:class:`~e2e.spqr.errors.SpqrReplayError`.  Sending moves to a new epoch only forward; when it
does, epochs more than one before it are dropped, and the sending halves of older ones cleared,
so a compromise later reveals no earlier sending key.  A message for a dropped epoch raises
:class:`~e2e.spqr.errors.EpochOutOfRangeError`.

Invariants
----------
Immutable: every operation returns a new :class:`Chain` and leaves the old one untouched, so a
caller commits only what succeeded.  ``links[-1]`` is epoch ``current_epoch``; ``links[i]``
epoch ``current_epoch - (len(links) - 1 - i)``.

What it does not know
---------------------
Where epoch secrets come from (:mod:`e2e.spqr.braid`), or messages.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field, replace
from typing import Final

from e2e.kdf import hkdf
from e2e.spqr.errors import (
    EpochOutOfRangeError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrReplayError,
)

__all__ = [
    "DEFAULT_MAX_JUMP",
    "DEFAULT_MAX_OOO_KEYS",
    "Direction",
    "ChainParams",
    "ChainDirection",
    "ChainEpoch",
    "Chain",
]

DEFAULT_MAX_JUMP: Final = 25_000
DEFAULT_MAX_OOO_KEYS: Final = 2_000
_ZERO_SALT: Final = bytes(32)
_START_INFO: Final = b"Signal PQ Ratchet V1 Chain  Start"
_ADD_EPOCH_INFO: Final = b"Signal PQ Ratchet V1 Chain Add Epoch"
_NEXT_INFO: Final = b"Signal PQ Ratchet V1 Chain Next"
_EPOCHS_TO_KEEP_BEFORE_SEND_EPOCH: Final = 1


class Direction(enum.IntEnum):
    """Which way our sending chain points: Alice (the session initiator) is ``A2B``."""

    A2B = 0
    B2A = 1

    def switch(self) -> Direction:
        """The peer's direction."""
        return Direction.B2A if self is Direction.A2B else Direction.A2B


@dataclass(frozen=True, slots=True)
class ChainParams:
    """The chain's limits (libsignal passes these defaults; ``max_jump`` is unlimited, 2³²−1,
    only for a session with oneself)."""

    max_jump: int = DEFAULT_MAX_JUMP
    max_ooo_keys: int = DEFAULT_MAX_OOO_KEYS

    def __post_init__(self) -> None:
        if not 0 < self.max_jump <= 0xFFFF_FFFF or not 0 < self.max_ooo_keys <= 0xFFFF_FFFF:
            raise ValueError("chain limits are positive 32-bit integers")

    @property
    def trim_size(self) -> int:
        """How many skipped keys a receiving chain holds before it prunes."""
        return self.max_ooo_keys * 11 // 10 + 1


def _step(next_key: bytes, ctr: int) -> tuple[bytes, bytes]:
    """One chain step: ``HKDF(0³², next, BE32(ctr) ‖ "Signal PQ Ratchet V1 Chain Next", 64)``,
    written out (extract, then the two expand blocks) because it runs once per message."""
    info = ctr.to_bytes(4, "big") + _NEXT_INFO
    prk = hmac.digest(_ZERO_SALT, next_key, "sha256")
    first = hmac.digest(prk, info + b"\x01", "sha256")
    return first, hmac.digest(prk, first + info + b"\x02", "sha256")


@dataclass(frozen=True, slots=True)
class ChainDirection:
    """One epoch's chain in one direction: counter, next chain key, skipped keys by index.

    ``next`` is empty once the chain has been retired (an old sending chain).  ``skipped`` is
    never modified after construction.
    """

    ctr: int
    next: bytes
    skipped: dict[int, bytes] = field(default_factory=dict)

    def next_key(self) -> tuple[ChainDirection, int, bytes]:
        """The next sending key and its index."""
        if len(self.next) != 32:
            raise EpochOutOfRangeError(None, "this SPQR sending chain was retired")
        ctr = self.ctr + 1
        next_key, key = _step(self.next, ctr)
        return ChainDirection(ctr, next_key, self.skipped), ctr, key

    def key(self, at: int, params: ChainParams) -> tuple[ChainDirection, bytes]:
        """The receiving key of message ``at``, with the chain that no longer holds it."""
        if at == self.ctr:
            raise SpqrReplayError(f"the SPQR key of message {at} was already used")
        if at < self.ctr:
            if at + params.max_ooo_keys < self.ctr:
                raise SpqrKeyTrimmedError(f"the SPQR key of message {at} is too old and was discarded")
            if at not in self.skipped:
                raise SpqrReplayError(f"the SPQR key of message {at} was already used")
            skipped = dict(self.skipped)
            key = skipped.pop(at)
            return ChainDirection(self.ctr, self.next, skipped), key
        if at - self.ctr > params.max_jump:
            raise SpqrKeyJumpError(
                f"message {at} is {at - self.ctr} steps ahead of the SPQR chain (limit {params.max_jump})"
            )
        if len(self.next) != 32:
            raise EpochOutOfRangeError(None, "this SPQR chain was retired")
        # Keys that would be pruned at once are neither kept nor, when the jump makes every held
        # key obsolete, are the held ones.
        skipped = {} if at > self.ctr + params.max_ooo_keys else dict(self.skipped)
        ctr = self.ctr
        next_key = self.next
        while at > ctr + 1:
            ctr += 1
            next_key, key = _step(next_key, ctr)
            if ctr + params.max_ooo_keys >= at:
                skipped[ctr] = key
        if len(skipped) >= params.trim_size:
            horizon = ctr - params.max_ooo_keys
            skipped = {index: key for index, key in skipped.items() if index >= horizon}
        ctr += 1
        next_key, key = _step(next_key, ctr)
        return ChainDirection(ctr, next_key, skipped), key

    def retired(self) -> ChainDirection:
        """This chain with its next key erased (no further keys can be derived)."""
        return ChainDirection(self.ctr, b"", self.skipped)

    def __repr__(self) -> str:
        return f"ChainDirection(ctr={self.ctr}, skipped={len(self.skipped)}, keys=<redacted>)"


@dataclass(frozen=True, slots=True)
class ChainEpoch:
    """The two chains of one epoch."""

    send: ChainDirection
    recv: ChainDirection


def _epoch_from(generated: bytes, direction: Direction) -> ChainEpoch:
    a2b = ChainDirection(0, generated[32:64])
    b2a = ChainDirection(0, generated[64:96])
    if direction is Direction.A2B:
        return ChainEpoch(send=a2b, recv=b2a)
    return ChainEpoch(send=b2a, recv=a2b)


@dataclass(frozen=True, slots=True)
class Chain:
    """All epochs' chains that are still needed, and the root that derives the next epoch's."""

    direction: Direction
    current_epoch: int
    send_epoch: int
    links: tuple[ChainEpoch, ...]
    next_root: bytes
    params: ChainParams

    @classmethod
    def new(cls, auth_key: bytes, direction: Direction, params: ChainParams | None = None) -> Chain:
        """Epoch 0's chains from the handshake's ``auth_key``."""
        generated = hkdf(_ZERO_SALT, auth_key, _START_INFO, 96)
        return cls(
            direction=Direction(direction),
            current_epoch=0,
            send_epoch=0,
            links=(_epoch_from(generated, Direction(direction)),),
            next_root=generated[:32],
            params=params or ChainParams(),
        )

    def add_epoch(self, epoch: int, secret: bytes) -> Chain:
        """The chain with epoch ``epoch`` (which must be ``current_epoch + 1``) added."""
        if epoch != self.current_epoch + 1:
            raise EpochOutOfRangeError(epoch, f"the chain is at epoch {self.current_epoch}")
        generated = hkdf(self.next_root, secret, _ADD_EPOCH_INFO, 96)
        return replace(
            self,
            current_epoch=epoch,
            links=(*self.links, _epoch_from(generated, self.direction)),
            next_root=generated[:32],
        )

    def _index(self, epoch: int) -> int:
        if epoch > self.current_epoch:
            raise EpochOutOfRangeError(epoch, f"the chain has reached epoch {self.current_epoch}")
        back = self.current_epoch - epoch
        if back >= len(self.links):
            raise EpochOutOfRangeError(epoch, "the chain no longer holds keys of that epoch")
        return len(self.links) - 1 - back

    def send_key(self, epoch: int) -> tuple[Chain, int, bytes]:
        """The next sending key of ``epoch``: ``(new chain, message index, key)``."""
        if epoch < self.send_epoch:
            raise EpochOutOfRangeError(epoch, f"the sending epoch already moved on to {self.send_epoch}")
        index = self._index(epoch)
        links = list(self.links)
        if epoch != self.send_epoch:
            # Moving on: keep one epoch before the new sending epoch (its receiving half may
            # still be needed for late messages) and retire every older sending half.
            while index > _EPOCHS_TO_KEEP_BEFORE_SEND_EPOCH:
                links.pop(0)
                index -= 1
            for i in range(index):
                links[i] = ChainEpoch(send=links[i].send.retired(), recv=links[i].recv)
        send, ctr, key = links[index].send.next_key()
        links[index] = ChainEpoch(send=send, recv=links[index].recv)
        chain = Chain(self.direction, self.current_epoch, epoch, tuple(links), self.next_root, self.params)
        return chain, ctr, key

    def recv_key(self, epoch: int, at: int) -> tuple[Chain, bytes]:
        """The receiving key of message ``at`` of ``epoch``, with the chain that no longer holds it."""
        index = self._index(epoch)
        recv, key = self.links[index].recv.key(at, self.params)
        links = list(self.links)
        links[index] = ChainEpoch(send=links[index].send, recv=recv)
        chain = Chain(
            self.direction, self.current_epoch, self.send_epoch, tuple(links), self.next_root, self.params
        )
        return chain, key

    def __repr__(self) -> str:
        return (
            f"Chain(direction={self.direction.name}, current_epoch={self.current_epoch}, "
            f"send_epoch={self.send_epoch}, epochs_held={len(self.links)}, keys=<redacted>)"
        )
