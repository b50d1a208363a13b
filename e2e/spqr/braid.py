"""The ML-KEM Braid: the state machine that agrees on a fresh KEM secret every epoch.

What this module owns
---------------------
The eleven states of SPQR V1's braid (Signal's "ML-KEM Braid" specification; the ``spqr``
crate's ``v1/chunked``) and their two operations, :func:`send` (what to put in the next outgoing
message) and :func:`recv` (what an incoming message changes).  Both are pure functions: they
return a new state and never modify their argument.

One epoch
---------
In each epoch one side is the **key sender** (``send_ek``: it makes a fresh ML-KEM-768 key pair)
and the other the **ciphertext sender** (``send_ct``: it encapsulates to that key).  Alice starts
epoch 1 as key sender, Bob as ciphertext sender; at the end of every epoch the roles swap.
Everything large travels as erasure-coded 32-byte chunks (:mod:`e2e.spqr.erasure`), one per
message, so no message grows by more than ~37 bytes and any large-enough subset of messages
rebuilds each value, in any order::

    key sender (send_ek)                         ciphertext sender (send_ct)
    KeysUnsampled ──generate, Hdr chunks──▶      NoHeaderReceived
    KeysSampled                                  ─(header + MAC complete, MAC checked)─▶
                                                 HeaderReceived ──encaps1: secret known──▶
    ◀──────────────────────── Ct1 chunks ─────── Ct1Sampled
    HeaderSent (Ek chunks) ─────────────────▶    (vector complete, checked against header)
    ─(c1 complete)─▶ Ct1Received                 EkReceivedCt1Sampled / Ct1Acknowledged
    (EkCt1Ack chunks, then Ct1Ack) ─────────▶    ─(both: vector and ack)─▶ encaps2, MAC
                                                 Ct2Sampled ──Ct2 chunks──▶
    EkSentCt1Received ─(c2 + MAC complete):
      decaps, secret known, MAC checked─▶ NoHeaderReceived (epoch + 1, now ciphertext sender)
                                                 ─(any message of epoch + 1)─▶
                                                 KeysUnsampled (epoch + 1, now key sender)

The epoch secret is ``HKDF-SHA256(salt = 0³², ikm = ML-KEM shared secret,
info = "Signal_PQCKA_V1_MLKEM768:SCKA Key" ‖ BE64(epoch), 32)``; each side mixes it into its
:class:`~e2e.spqr.authenticator.Authenticator` and hands it to the chain
(:mod:`e2e.spqr.chain`) the moment it knows it: the ciphertext sender when it samples ``c1``, the
key sender when it has decapsulated.

Messages of an earlier epoch are ignored (they still carry chain keys, which
:mod:`e2e.spqr.state` handles); messages of a later epoch raise
:class:`~e2e.spqr.errors.EpochOutOfRangeError`, except the one step the ciphertext sender waits
for (its peer moving to ``epoch + 1``).  A message type that does not fit the state is ignored, as
in the crate: it is a duplicate or a late arrival.

Invariants
----------
Each state carries ``epoch`` (≥ 1) and the authenticator; secrets (the ML-KEM decapsulation key, the
encapsulation state) live only as long as the state that needs them and are redacted from
``repr``.

What it does not know
---------------------
Message indices, chain keys, versions or bytes on the wire (:mod:`e2e.spqr.message`,
:mod:`e2e.spqr.state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.kdf import hkdf
from e2e.keys import Rng
from e2e.spqr import mlkem768
from e2e.spqr.authenticator import MAC_SIZE, Authenticator
from e2e.spqr.erasure import Chunk, ChunkDecoder, ChunkEncoder
from e2e.spqr.errors import EncapsulationKeyMismatchError, EpochOutOfRangeError
from e2e.spqr.message import MessageType

__all__ = [
    "HEADER_MESSAGE_SIZE",
    "CT2_MESSAGE_SIZE",
    "EpochSecret",
    "KeysUnsampled",
    "KeysSampled",
    "HeaderSent",
    "Ct1Received",
    "EkSentCt1Received",
    "NoHeaderReceived",
    "HeaderReceived",
    "Ct1Sampled",
    "EkReceivedCt1Sampled",
    "Ct1Acknowledged",
    "Ct2Sampled",
    "BraidState",
    "Outgoing",
    "initial_alice",
    "initial_bob",
    "send",
    "recv",
    "epoch_secret",
]

HEADER_MESSAGE_SIZE: Final = mlkem768.HEADER_SIZE + MAC_SIZE
"""The header and its MAC, the value the ``Hdr`` chunks carry (96 bytes)."""
CT2_MESSAGE_SIZE: Final = mlkem768.CIPHERTEXT2_SIZE + MAC_SIZE
"""The second ciphertext part and the ciphertext MAC, carried by ``Ct2`` chunks (160 bytes)."""
_ZERO_SALT: Final = bytes(32)
_SCKA_KEY_INFO: Final = b"Signal_PQCKA_V1_MLKEM768:SCKA Key"


@dataclass(frozen=True, slots=True)
class EpochSecret:
    """The secret the braid agreed on for ``epoch``."""

    epoch: int
    secret: bytes

    def __repr__(self) -> str:
        return f"EpochSecret(epoch={self.epoch}, secret=<redacted>)"


def epoch_secret(epoch: int, shared_secret: bytes) -> EpochSecret:
    """The epoch secret derived from an ML-KEM shared secret (the crate's "SCKA Key")."""
    return EpochSecret(epoch, hkdf(_ZERO_SALT, shared_secret, _SCKA_KEY_INFO + epoch.to_bytes(8, "big"), 32))


class _Redacted:
    """Gives every braid state a ``repr`` that names it and its epoch and hides its secrets."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epoch={getattr(self, 'epoch', '?')}, <secrets redacted>)"


# The key sender's states (send_ek).


@dataclass(frozen=True, slots=True, repr=False)
class KeysUnsampled(_Redacted):
    """Key sender at the start of an epoch: no key pair yet."""

    epoch: int
    auth: Authenticator


@dataclass(frozen=True, slots=True, repr=False)
class KeysSampled(_Redacted):
    """Key pair made; sending header chunks until the first ``c1`` chunk shows it arrived."""

    epoch: int
    auth: Authenticator
    dk: bytes
    vector: bytes
    sending_hdr: ChunkEncoder


@dataclass(frozen=True, slots=True, repr=False)
class HeaderSent(_Redacted):
    """Sending vector chunks, collecting ``c1`` chunks."""

    epoch: int
    auth: Authenticator
    dk: bytes
    sending_ek: ChunkEncoder
    receiving_ct1: ChunkDecoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Received(_Redacted):
    """``c1`` complete; still sending vector chunks, now flagged as acknowledging ``c1``."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    sending_ek: ChunkEncoder


@dataclass(frozen=True, slots=True, repr=False)
class EkSentCt1Received(_Redacted):
    """The peer has the vector; collecting ``c2`` chunks, sending bare acknowledgements."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    receiving_ct2: ChunkDecoder


# The ciphertext sender's states (send_ct).


@dataclass(frozen=True, slots=True, repr=False)
class NoHeaderReceived(_Redacted):
    """Ciphertext sender collecting header chunks."""

    epoch: int
    auth: Authenticator
    receiving_hdr: ChunkDecoder


@dataclass(frozen=True, slots=True, repr=False)
class HeaderReceived(_Redacted):
    """Authenticated header in hand; the next send encapsulates."""

    epoch: int
    auth: Authenticator
    header: bytes
    receiving_ek: ChunkDecoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Sampled(_Redacted):
    """``c1`` made (the epoch secret is known); sending ``c1`` chunks, collecting vector chunks."""

    epoch: int
    auth: Authenticator
    header: bytes
    encaps_state: bytes
    ct1: bytes
    sending_ct1: ChunkEncoder
    receiving_ek: ChunkDecoder


@dataclass(frozen=True, slots=True, repr=False)
class EkReceivedCt1Sampled(_Redacted):
    """Vector complete; sending ``c1`` chunks until the peer acknowledges ``c1``."""

    epoch: int
    auth: Authenticator
    header: bytes
    encaps_state: bytes
    vector: bytes
    ct1: bytes
    sending_ct1: ChunkEncoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Acknowledged(_Redacted):
    """The peer has ``c1``; still collecting vector chunks."""

    epoch: int
    auth: Authenticator
    header: bytes
    encaps_state: bytes
    ct1: bytes
    receiving_ek: ChunkDecoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct2Sampled(_Redacted):
    """``c2`` and its MAC made; sending their chunks until the peer starts the next epoch."""

    epoch: int
    auth: Authenticator
    sending_ct2: ChunkEncoder


BraidState = (
    KeysUnsampled
    | KeysSampled
    | HeaderSent
    | Ct1Received
    | EkSentCt1Received
    | NoHeaderReceived
    | HeaderReceived
    | Ct1Sampled
    | EkReceivedCt1Sampled
    | Ct1Acknowledged
    | Ct2Sampled
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What :func:`send` produces: the message fields and, at most once per epoch, its secret."""

    epoch: int
    type: MessageType
    chunk: Chunk | None
    secret: EpochSecret | None


def initial_alice(auth_key: bytes) -> KeysUnsampled:
    """Alice's (the initiator's, direction A2B) braid: key sender of epoch 1."""
    return KeysUnsampled(1, Authenticator.new(auth_key, 1))


def initial_bob(auth_key: bytes) -> NoHeaderReceived:
    """Bob's braid: ciphertext sender of epoch 1."""
    return NoHeaderReceived(1, Authenticator.new(auth_key, 1), ChunkDecoder.new(HEADER_MESSAGE_SIZE))


def _send_ct2(state: EkReceivedCt1Sampled | Ct1Acknowledged, vector: bytes) -> Ct2Sampled:
    ct2 = mlkem768.encaps2(vector, state.header, state.encaps_state)
    mac = state.auth.mac_ct(state.epoch, state.ct1 + ct2)
    return Ct2Sampled(state.epoch, state.auth, ChunkEncoder.encode(ct2 + mac))


def send(state: BraidState, rng: Rng) -> tuple[BraidState, Outgoing]:
    """The next outgoing message of ``state`` and the state after sending it."""
    epoch = state.epoch
    if isinstance(state, KeysUnsampled):
        keys = mlkem768.generate(rng)
        mac = state.auth.mac_hdr(epoch, keys.header)
        encoder, chunk = ChunkEncoder.encode(keys.header + mac).next_chunk()
        return KeysSampled(epoch, state.auth, keys.seed, keys.vector, encoder), Outgoing(
            epoch, MessageType.HDR, chunk, None
        )
    if isinstance(state, KeysSampled):
        encoder, chunk = state.sending_hdr.next_chunk()
        new_state: BraidState = KeysSampled(epoch, state.auth, state.dk, state.vector, encoder)
        return new_state, Outgoing(epoch, MessageType.HDR, chunk, None)
    if isinstance(state, HeaderSent):
        encoder, chunk = state.sending_ek.next_chunk()
        new_state = HeaderSent(epoch, state.auth, state.dk, encoder, state.receiving_ct1)
        return new_state, Outgoing(epoch, MessageType.EK, chunk, None)
    if isinstance(state, Ct1Received):
        encoder, chunk = state.sending_ek.next_chunk()
        new_state = Ct1Received(epoch, state.auth, state.dk, state.ct1, encoder)
        return new_state, Outgoing(epoch, MessageType.EK_CT1_ACK, chunk, None)
    if isinstance(state, EkSentCt1Received):
        return state, Outgoing(epoch, MessageType.CT1_ACK, None, None)
    if isinstance(state, NoHeaderReceived | Ct1Acknowledged):
        return state, Outgoing(epoch, MessageType.NONE, None, None)
    if isinstance(state, HeaderReceived):
        ct1, encaps_state, shared_secret = mlkem768.encaps1(state.header, rng)
        secret = epoch_secret(epoch, shared_secret)
        auth = state.auth.update(epoch, secret.secret)
        encoder, chunk = ChunkEncoder.encode(ct1).next_chunk()
        new_state = Ct1Sampled(epoch, auth, state.header, encaps_state, ct1, encoder, state.receiving_ek)
        return new_state, Outgoing(epoch, MessageType.CT1, chunk, secret)
    if isinstance(state, Ct1Sampled):
        encoder, chunk = state.sending_ct1.next_chunk()
        new_state = Ct1Sampled(
            epoch, state.auth, state.header, state.encaps_state, state.ct1, encoder, state.receiving_ek
        )
        return new_state, Outgoing(epoch, MessageType.CT1, chunk, None)
    if isinstance(state, EkReceivedCt1Sampled):
        encoder, chunk = state.sending_ct1.next_chunk()
        new_state = EkReceivedCt1Sampled(
            epoch, state.auth, state.header, state.encaps_state, state.vector, state.ct1, encoder
        )
        return new_state, Outgoing(epoch, MessageType.CT1, chunk, None)
    encoder, chunk = state.sending_ct2.next_chunk()
    return Ct2Sampled(epoch, state.auth, encoder), Outgoing(epoch, MessageType.CT2, chunk, None)


def _checked_vector(state: Ct1Sampled | Ct1Acknowledged, vector: bytes) -> bytes:
    if not mlkem768.vector_matches_header(vector, state.header):
        raise EncapsulationKeyMismatchError(
            f"the encapsulation-key vector of epoch {state.epoch} does not match its authenticated header"
        )
    return vector


def recv(
    state: BraidState, epoch: int, message_type: MessageType, chunk: Chunk | None
) -> tuple[BraidState, EpochSecret | None]:
    """The state after receiving a message of ``epoch`` and ``message_type`` carrying ``chunk``,
    and the epoch secret if this message completed the epoch on the key sender's side."""
    if epoch > state.epoch:
        if isinstance(state, Ct2Sampled) and epoch == state.epoch + 1:
            return KeysUnsampled(epoch, state.auth), None
        raise EpochOutOfRangeError(epoch, f"this side is in epoch {state.epoch}")
    if epoch < state.epoch:
        return state, None
    kind = message_type
    if isinstance(state, KeysSampled):
        if kind is MessageType.CT1 and chunk is not None:
            decoder = ChunkDecoder.new(mlkem768.CIPHERTEXT1_SIZE).add_chunk(chunk)
            encoder = ChunkEncoder.encode(state.vector)
            return _after_ct1_chunk(HeaderSent(epoch, state.auth, state.dk, encoder, decoder)), None
        return state, None
    if isinstance(state, HeaderSent):
        if kind is MessageType.CT1 and chunk is not None:
            decoder = state.receiving_ct1.add_chunk(chunk)
            return _after_ct1_chunk(HeaderSent(epoch, state.auth, state.dk, state.sending_ek, decoder)), None
        return state, None
    if isinstance(state, Ct1Received):
        if kind is MessageType.CT2 and chunk is not None:
            decoder = ChunkDecoder.new(CT2_MESSAGE_SIZE).add_chunk(chunk)
            return _after_ct2_chunk(EkSentCt1Received(epoch, state.auth, state.dk, state.ct1, decoder))
        return state, None
    if isinstance(state, EkSentCt1Received):
        if kind is MessageType.CT2 and chunk is not None:
            decoder = state.receiving_ct2.add_chunk(chunk)
            return _after_ct2_chunk(EkSentCt1Received(epoch, state.auth, state.dk, state.ct1, decoder))
        return state, None
    if isinstance(state, NoHeaderReceived):
        if kind is MessageType.HDR and chunk is not None:
            decoder = state.receiving_hdr.add_chunk(chunk)
            value = decoder.decoded()
            if value is None:
                return NoHeaderReceived(epoch, state.auth, decoder), None
            header, mac = value[: mlkem768.HEADER_SIZE], value[mlkem768.HEADER_SIZE :]
            state.auth.verify_hdr(epoch, header, mac)
            return HeaderReceived(epoch, state.auth, header, ChunkDecoder.new(mlkem768.VECTOR_SIZE)), None
        return state, None
    if isinstance(state, Ct1Sampled):
        acknowledged = kind is MessageType.EK_CT1_ACK
        if kind in (MessageType.EK, MessageType.EK_CT1_ACK) and chunk is not None:
            decoder = state.receiving_ek.add_chunk(chunk)
            vector = decoder.decoded()
            if vector is not None:
                _checked_vector(state, vector)
                if acknowledged:
                    waiting = Ct1Acknowledged(
                        epoch, state.auth, state.header, state.encaps_state, state.ct1, decoder
                    )
                    return _send_ct2(waiting, vector), None
                return EkReceivedCt1Sampled(
                    epoch, state.auth, state.header, state.encaps_state, vector, state.ct1, state.sending_ct1
                ), None
            if acknowledged:
                return Ct1Acknowledged(
                    epoch, state.auth, state.header, state.encaps_state, state.ct1, decoder
                ), None
            return Ct1Sampled(
                epoch, state.auth, state.header, state.encaps_state, state.ct1, state.sending_ct1, decoder
            ), None
        return state, None
    if isinstance(state, EkReceivedCt1Sampled):
        if kind in (MessageType.CT1_ACK, MessageType.EK_CT1_ACK):
            return _send_ct2(state, state.vector), None
        return state, None
    if isinstance(state, Ct1Acknowledged):
        if kind in (MessageType.EK, MessageType.EK_CT1_ACK) and chunk is not None:
            decoder = state.receiving_ek.add_chunk(chunk)
            vector = decoder.decoded()
            if vector is None:
                return Ct1Acknowledged(
                    epoch, state.auth, state.header, state.encaps_state, state.ct1, decoder
                ), None
            return _send_ct2(state, _checked_vector(state, vector)), None
        return state, None
    # KeysUnsampled, HeaderReceived and Ct2Sampled wait for nothing within their epoch.
    return state, None


def _after_ct1_chunk(state: HeaderSent) -> BraidState:
    ct1 = state.receiving_ct1.decoded()
    if ct1 is None:
        return state
    return Ct1Received(state.epoch, state.auth, state.dk, ct1, state.sending_ek)


def _after_ct2_chunk(state: EkSentCt1Received) -> tuple[BraidState, EpochSecret | None]:
    value = state.receiving_ct2.decoded()
    if value is None:
        return state, None
    ct2, mac = value[: mlkem768.CIPHERTEXT2_SIZE], value[mlkem768.CIPHERTEXT2_SIZE :]
    secret = epoch_secret(state.epoch, mlkem768.decaps(state.dk, state.ct1, ct2))
    auth = state.auth.update(state.epoch, secret.secret)
    auth.verify_ct(state.epoch, state.ct1 + ct2, mac)
    next_state = NoHeaderReceived(state.epoch + 1, auth, ChunkDecoder.new(HEADER_MESSAGE_SIZE))
    return next_state, secret
