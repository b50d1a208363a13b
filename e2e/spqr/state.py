"""One side's SPQR state: version negotiation, the braid and the chain, and its storage format.

What this module owns
---------------------
:class:`SpqrState`, the object a v4 session keeps next to its Double Ratchet state, created by
:func:`initial_state` with the parameters libsignal passes to ``spqr::initial_state``: the
handshake's ``auth_key`` (32 bytes; libsignal takes the third 32 bytes of the PQXDH key
derivation), the side's :class:`~e2e.spqr.chain.Direction` (the initiator, Alice, is ``A2B``), the
``min_version`` it accepts (libsignal: ``V1``, "require that all clients speak SPQR") and the
chain limits.  Its two operations mirror the crate's ``spqr::send`` and ``spqr::recv``:

* :meth:`SpqrState.send` ``(rng) -> (new state, pq_ratchet bytes, key or None)``: the braid's next
  message, stamped with the next index of the sending chain, and that index's 32-byte key.
* :meth:`SpqrState.recv` ``(pq_ratchet bytes) -> (new state, key or None)``: the braid absorbs the
  message and the receiving chain yields the key for the index it names.

The key is what the Triple Ratchet mixes into the Double Ratchet message key: libsignal derives
``cipher key ‖ MAC key ‖ IV = HKDF-SHA256(salt = SPQR key, ikm = DR message-key seed,
info = "WhisperMessageKeys", 80)`` (:func:`e2e.spqr.message_keys`).  With ``min_version = V1``
every message has a key.

Commit on success
-----------------
Neither operation changes the state it is called on; both return the successor.  A v4 session
calls :meth:`~SpqrState.recv` before checking the SignalMessage MAC (libsignal does the same),
uses the key to derive the MAC key, and keeps the returned state only if the MAC and decryption
succeed.  A refused message therefore changes nothing, whatever the SPQR layer accepted.

Versions
--------
``V0`` is "no SPQR" (an empty ``pq_ratchet``), ``V1`` the braid above.  A state starts at V1 but
*negotiating*: until it receives its first message it remembers its parameters, and a V0 message
then downgrades it to V0 if ``min_version`` allows (it never does for libsignal's parameters) and
raises :class:`~e2e.spqr.errors.SpqrVersionError` otherwise.  After the first message the
version is fixed and a V0 message raises.  A message of a version above V1 raises as well (the
crate ignores such a message and returns no key, which the session MAC then refuses; raising says
so directly).  With ``min_version = V0`` the crate derives no keys until negotiation is over
(index 0 on the wire); this implementation does the same.

Storage format, version 1
-------------------------
``"R" ‖ 0x01 ‖ protobuf-style fields`` (the project's record header, :mod:`e2e.records`):

============ ====================================================================================
field        contents
============ ====================================================================================
1            protocol version of the braid (0 or 1)
2            negotiation, while it lasts: 1 auth_key, 2 direction, 3 min_version, 4 max_jump,
             5 max_ooo_keys
3            chain, once it exists: 1 direction, 2 current_epoch, 3 send_epoch, 4 next_root,
             5 max_jump, 6 max_ooo_keys, 7 (repeated) epoch: 1 send half, 2 receiving half, each
             1 ctr, 2 next (empty when retired), 3 skipped keys as ``BE32(index) ‖ key`` records
4            braid (V1): 1 state number (1..11, the crate's ``V1State`` oneof order), 2 epoch,
             3 authenticator root key, 4 MAC key, 5 ML-KEM decapsulation key (64-byte seed,
             or 2,400-byte expanded key in a state imported from the crate), 6 header, 7 vector, 8 c1,
             9 encapsulation state, 10 encoder (1 message, 2 next index), 11 decoder (1 length,
             2 repeated lane: ``BE16(x) ‖ BE16(y)`` points)
============ ====================================================================================

:meth:`SpqrState.serialize` and :meth:`SpqrState.deserialize` round-trip exactly; a frozen fixture
of this format is kept in the tests.  This is the project's own layout, not the crate's
``PqRatchetState`` protobuf (whose encapsulation state is libcrux's in-memory layout).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Final

from e2e import protobuf
from e2e.errors import DecodeError
from e2e.keys import Rng
from e2e.spqr import braid, mlkem768
from e2e.spqr.authenticator import Authenticator
from e2e.spqr.chain import Chain, ChainDirection, ChainEpoch, ChainParams, Direction
from e2e.spqr.erasure import LANES, ChunkDecoder, ChunkEncoder
from e2e.spqr.errors import SpqrStateFormatError, SpqrVersionError
from e2e.spqr.message import VERSION_V1, SpqrMessage

__all__ = ["STATE_KIND", "STATE_FORMAT_VERSION", "Version", "SpqrState", "initial_state"]

STATE_KIND: Final = ord("R")
"""The first byte of a stored SPQR state."""
STATE_FORMAT_VERSION: Final = 1
"""The storage format this code writes and reads."""


class Version(enum.IntEnum):
    """SPQR protocol versions (the crate's ``Version``)."""

    V0 = 0
    """No post-quantum ratchet: empty ``pq_ratchet`` fields and no keys."""
    V1 = 1
    """The ML-KEM Braid over incremental ML-KEM-768."""


@dataclass(frozen=True, slots=True)
class _Negotiation:
    auth_key: bytes
    direction: Direction
    min_version: Version
    params: ChainParams

    def __repr__(self) -> str:
        version = int(self.min_version)
        return f"_Negotiation(direction={self.direction.name}, min_version=V{version}, auth_key=<redacted>)"


@dataclass(frozen=True, slots=True)
class SpqrState:
    """One side's SPQR state (immutable).  Build it with :func:`initial_state`."""

    braid: braid.BraidState | None
    """The braid, or ``None`` once negotiated down to V0."""
    chain: Chain | None
    """The message-key chain (``None`` only while negotiating with ``min_version`` V0)."""
    negotiation: _Negotiation | None
    """The initial parameters, kept until the first message is received."""

    @property
    def version(self) -> Version:
        """The protocol version this state speaks."""
        return Version.V0 if self.braid is None else Version.V1

    @property
    def epoch(self) -> int:
        """The braid epoch this side is in (0 for V0)."""
        return 0 if self.braid is None else self.braid.epoch

    @property
    def negotiating(self) -> bool:
        """Whether the version can still be negotiated down (no message received yet)."""
        return self.negotiation is not None

    @property
    def braid_state_name(self) -> str:
        """The braid state's name (``KeysSampled``, ``Ct1Acknowledged``, …), for explanations."""
        return "V0" if self.braid is None else type(self.braid).__name__

    def _chain_for_use(self) -> Chain | None:
        if self.chain is not None:
            return self.chain
        negotiation = self.negotiation
        if negotiation is None or negotiation.min_version is Version.V0:
            return None
        return Chain.new(negotiation.auth_key, negotiation.direction, negotiation.params)

    def send(self, rng: Rng) -> tuple[SpqrState, bytes, bytes | None]:
        """``(new state, pq_ratchet bytes, SPQR message key or None)`` for the next message."""
        if self.braid is None:
            return self, b"", None
        new_braid, outgoing = braid.send(self.braid, rng)
        chain = self._chain_for_use()
        index = 0
        key: bytes | None = None
        if chain is not None:
            if outgoing.secret is not None:
                chain = chain.add_epoch(outgoing.secret.epoch, outgoing.secret.secret)
            chain, index, key = chain.send_key(outgoing.epoch - 1)
        message = SpqrMessage(outgoing.epoch, index, outgoing.type, outgoing.chunk).serialize()
        return SpqrState(new_braid, chain, self.negotiation), message, key

    def recv(self, data: bytes) -> tuple[SpqrState, bytes | None]:
        """``(new state, SPQR message key or None)`` for a received ``pq_ratchet`` field.

        Raises a subclass of :class:`~e2e.spqr.errors.SpqrError` for a message that is malformed,
        of a refused version, from a future epoch, a replay, inconsistent with earlier chunks, or
        whose reassembled value fails its check; ``self`` is unchanged either way.
        """
        if not isinstance(data, bytes):
            raise SpqrVersionError(f"a pq_ratchet field is bytes, not {type(data).__name__}")
        message_version = Version.V0 if not data or data[0] == 0 else None
        if data and data[0] == VERSION_V1:
            message_version = Version.V1
        if message_version is None:
            raise SpqrVersionError(f"SPQR message version {data[0]} is not supported")
        state = self
        if message_version < self.version:
            negotiation = self.negotiation
            if negotiation is None:
                raise SpqrVersionError("SPQR version mismatch: the peer sent no post-quantum ratchet message")
            if message_version < negotiation.min_version:
                raise SpqrVersionError(
                    f"SPQR minimum version: the peer sent V{message_version}, this session requires "
                    f"V{negotiation.min_version}"
                )
            state = SpqrState(None, None, None)
        if state.braid is None:
            return SpqrState(None, None, None), None
        message = SpqrMessage.deserialize(data)
        new_braid, secret = braid.recv(state.braid, message.epoch, message.type, message.chunk)
        chain = state._chain_for_use()
        if chain is None:
            negotiation = state.negotiation
            if negotiation is None:
                raise SpqrStateFormatError("SPQR state has neither a chain nor negotiation parameters")
            chain = Chain.new(negotiation.auth_key, negotiation.direction, negotiation.params)
        if secret is not None:
            chain = chain.add_epoch(secret.epoch, secret.secret)
        key: bytes | None = None
        if not (message.epoch == 1 and message.index == 0):
            chain, key = chain.recv_key(message.epoch - 1, message.index)
        return SpqrState(new_braid, chain, None), key

    # Storage.

    def serialize(self) -> bytes:
        """The versioned storage form (see the module docstring)."""
        out = bytes((STATE_KIND, STATE_FORMAT_VERSION)) + protobuf.encode_uint_field(1, self.version)
        if self.negotiation is not None:
            n = self.negotiation
            out += protobuf.encode_bytes_field(
                2,
                protobuf.encode_bytes_field(1, n.auth_key)
                + protobuf.encode_uint_field(2, n.direction)
                + protobuf.encode_uint_field(3, n.min_version)
                + protobuf.encode_uint_field(4, n.params.max_jump)
                + protobuf.encode_uint_field(5, n.params.max_ooo_keys),
            )
        if self.chain is not None:
            out += protobuf.encode_bytes_field(3, _chain_bytes(self.chain))
        if self.braid is not None:
            out += protobuf.encode_bytes_field(4, _braid_bytes(self.braid))
        return out

    @classmethod
    def deserialize(cls, data: bytes) -> SpqrState:
        """Read a stored state; raises :class:`~e2e.spqr.errors.SpqrStateFormatError`."""
        if not isinstance(data, bytes) or len(data) < 2 or data[0] != STATE_KIND:
            raise SpqrStateFormatError("not a stored SPQR state")
        if data[1] != STATE_FORMAT_VERSION:
            raise SpqrStateFormatError(
                f"stored SPQR state format version {data[1]} is not supported (this code reads version 1)"
            )
        try:
            return _read_state(data[2:])
        except SpqrStateFormatError:
            raise
        except (DecodeError, ValueError, KeyError, IndexError) as error:
            raise SpqrStateFormatError(f"corrupt stored SPQR state: {error}") from None

    def __repr__(self) -> str:
        return (
            f"SpqrState(version=V{int(self.version)}, epoch={self.epoch}, braid={self.braid_state_name}, "
            f"negotiating={self.negotiating}, secrets=<redacted>)"
        )


def initial_state(
    auth_key: bytes,
    direction: Direction,
    min_version: Version = Version.V1,
    params: ChainParams | None = None,
) -> SpqrState:
    """A fresh V1 state, as ``spqr::initial_state`` makes it from libsignal's parameters."""
    if not isinstance(auth_key, bytes) or len(auth_key) != 32:
        raise ValueError("the SPQR auth key is 32 bytes")
    direction = Direction(direction)
    min_version = Version(min_version)
    params = params or ChainParams()
    negotiation = _Negotiation(auth_key, direction, min_version, params)
    initial = braid.initial_alice(auth_key) if direction is Direction.A2B else braid.initial_bob(auth_key)
    chain = None if min_version is Version.V0 else Chain.new(auth_key, direction, params)
    return SpqrState(initial, chain, negotiation)


# The storage encoding of the parts.

_BRAID_CLASSES: Final[tuple[type, ...]] = (
    braid.KeysUnsampled,
    braid.KeysSampled,
    braid.HeaderSent,
    braid.Ct1Received,
    braid.EkSentCt1Received,
    braid.NoHeaderReceived,
    braid.HeaderReceived,
    braid.Ct1Sampled,
    braid.EkReceivedCt1Sampled,
    braid.Ct1Acknowledged,
    braid.Ct2Sampled,
)
_BYTES_FIELDS: Final = {
    "dk": 5,
    "header": 6,
    "vector": 7,
    "ct1": 8,
    "encaps_state": 9,
}
_ENCODER_FIELDS: Final = ("sending_hdr", "sending_ek", "sending_ct1", "sending_ct2")
_DECODER_FIELDS: Final = ("receiving_ct1", "receiving_ct2", "receiving_hdr", "receiving_ek")
_MESSAGE_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.LEN),
    3: protobuf.Field(protobuf.LEN),
    4: protobuf.Field(protobuf.LEN),
}
_NEGOTIATION_SCHEMA: Final = {
    1: protobuf.Field(protobuf.LEN),
    2: protobuf.Field(protobuf.VARINT),
    3: protobuf.Field(protobuf.VARINT),
    4: protobuf.Field(protobuf.VARINT),
    5: protobuf.Field(protobuf.VARINT),
}
_CHAIN_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.VARINT),
    3: protobuf.Field(protobuf.VARINT),
    4: protobuf.Field(protobuf.LEN),
    5: protobuf.Field(protobuf.VARINT),
    6: protobuf.Field(protobuf.VARINT),
    7: protobuf.Field(protobuf.LEN, repeated=True),
}
_LINK_SCHEMA: Final = {1: protobuf.Field(protobuf.LEN), 2: protobuf.Field(protobuf.LEN)}
_DIRECTION_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.LEN),
    3: protobuf.Field(protobuf.LEN),
}
_BRAID_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.VARINT),
    3: protobuf.Field(protobuf.LEN),
    4: protobuf.Field(protobuf.LEN),
    **{number: protobuf.Field(protobuf.LEN) for number in _BYTES_FIELDS.values()},
    10: protobuf.Field(protobuf.LEN),
    11: protobuf.Field(protobuf.LEN),
}
_ENCODER_SCHEMA: Final = {1: protobuf.Field(protobuf.LEN), 2: protobuf.Field(protobuf.VARINT)}
_DECODER_SCHEMA: Final = {1: protobuf.Field(protobuf.VARINT), 2: protobuf.Field(protobuf.LEN, repeated=True)}
_UINT32_MAX: Final = 0xFFFF_FFFF


def _direction_bytes(half: ChainDirection) -> bytes:
    skipped = b"".join(index.to_bytes(4, "big") + key for index, key in sorted(half.skipped.items()))
    return (
        protobuf.encode_uint_field(1, half.ctr)
        + protobuf.encode_bytes_field(2, half.next)
        + protobuf.encode_bytes_field(3, skipped)
    )


def _chain_bytes(chain: Chain) -> bytes:
    out = (
        protobuf.encode_uint_field(1, chain.direction)
        + protobuf.encode_uint_field(2, chain.current_epoch)
        + protobuf.encode_uint_field(3, chain.send_epoch)
        + protobuf.encode_bytes_field(4, chain.next_root)
        + protobuf.encode_uint_field(5, chain.params.max_jump)
        + protobuf.encode_uint_field(6, chain.params.max_ooo_keys)
    )
    for link in chain.links:
        out += protobuf.encode_bytes_field(
            7,
            protobuf.encode_bytes_field(1, _direction_bytes(link.send))
            + protobuf.encode_bytes_field(2, _direction_bytes(link.recv)),
        )
    return out


def _encoder_message(encoder: ChunkEncoder) -> bytes:
    values = [0] * sum(len(lane) for lane in encoder.lanes)
    for lane, points in enumerate(encoder.lanes):
        for x, value in enumerate(points):
            values[x * LANES + lane] = value
    return b"".join(value.to_bytes(2, "big") for value in values)


def _braid_bytes(state: braid.BraidState) -> bytes:
    out = protobuf.encode_uint_field(1, _BRAID_CLASSES.index(type(state)) + 1)
    out += protobuf.encode_uint_field(2, state.epoch)
    out += protobuf.encode_bytes_field(3, state.auth.root_key) + protobuf.encode_bytes_field(
        4, state.auth.mac_key
    )
    for item in fields(state):
        value = getattr(state, item.name)
        if item.name in _BYTES_FIELDS:
            out += protobuf.encode_bytes_field(_BYTES_FIELDS[item.name], value)
        elif item.name in _ENCODER_FIELDS:
            out += protobuf.encode_bytes_field(
                10,
                protobuf.encode_bytes_field(1, _encoder_message(value))
                + protobuf.encode_uint_field(2, value.next_index),
            )
        elif item.name in _DECODER_FIELDS:
            decoder_bytes = protobuf.encode_uint_field(1, value.length)
            for lane in value.lanes:
                decoder_bytes += protobuf.encode_bytes_field(
                    2, b"".join(x.to_bytes(2, "big") + y.to_bytes(2, "big") for x, y in lane)
                )
            out += protobuf.encode_bytes_field(11, decoder_bytes)
    return out


def _fixed(record: protobuf.Record, number: int, what: str, length: int | tuple[int, ...]) -> bytes:
    value = protobuf.get_bytes(record, number, what)
    lengths = (length,) if isinstance(length, int) else length
    if len(value) not in lengths:
        raise SpqrStateFormatError(f"stored SPQR {what} has {len(value)} bytes, expected {lengths}")
    return value


def _read_params(record: protobuf.Record, jump: int, ooo: int) -> ChainParams:
    return ChainParams(
        protobuf.get_uint(record, jump, "max_jump", _UINT32_MAX),
        protobuf.get_uint(record, ooo, "max_ooo_keys", _UINT32_MAX),
    )


def _read_direction(data: bytes) -> ChainDirection:
    record = protobuf.parse(data, _DIRECTION_SCHEMA)
    next_key = protobuf.get_bytes(record, 2, "chain key")
    if len(next_key) not in (0, 32):
        raise SpqrStateFormatError("stored SPQR chain key has the wrong length")
    packed = protobuf.get_bytes(record, 3, "skipped keys")
    if len(packed) % 36:
        raise SpqrStateFormatError("stored SPQR skipped keys are not 36-byte records")
    skipped = {
        int.from_bytes(packed[i : i + 4], "big"): packed[i + 4 : i + 36] for i in range(0, len(packed), 36)
    }
    return ChainDirection(protobuf.get_uint(record, 1, "chain counter", _UINT32_MAX), next_key, skipped)


def _read_chain(data: bytes) -> Chain:
    record = protobuf.parse(data, _CHAIN_SCHEMA)
    links = []
    for link_bytes in protobuf.get_repeated_bytes(record, 7):
        link = protobuf.parse(link_bytes, _LINK_SCHEMA)
        links.append(
            ChainEpoch(
                _read_direction(protobuf.get_bytes(link, 1, "sending chain")),
                _read_direction(protobuf.get_bytes(link, 2, "receiving chain")),
            )
        )
    current_epoch = protobuf.get_uint(record, 2, "current epoch")
    if not links or len(links) > current_epoch + 1:
        raise SpqrStateFormatError("stored SPQR chain has an impossible number of epochs")
    return Chain(
        direction=Direction(protobuf.get_uint(record, 1, "direction", 1)),
        current_epoch=current_epoch,
        send_epoch=protobuf.get_uint(record, 3, "send epoch"),
        links=tuple(links),
        next_root=_fixed(record, 4, "chain root", 32),
        params=_read_params(record, 5, 6),
    )


def _read_encoder(data: bytes, expected_length: int) -> ChunkEncoder:
    record = protobuf.parse(data, _ENCODER_SCHEMA)
    message = protobuf.get_bytes(record, 1, "encoder message")
    if len(message) != expected_length:
        raise SpqrStateFormatError(
            f"stored SPQR encoder holds {len(message)} bytes, expected {expected_length}"
        )
    encoder = ChunkEncoder.encode(message)
    return ChunkEncoder(encoder.lanes, protobuf.get_uint(record, 2, "encoder index", _UINT32_MAX))


def _read_decoder(data: bytes, expected_length: int) -> ChunkDecoder:
    record = protobuf.parse(data, _DECODER_SCHEMA)
    length = protobuf.get_uint(record, 1, "decoder length")
    if length != expected_length:
        raise SpqrStateFormatError(f"stored SPQR decoder is for {length} bytes, expected {expected_length}")
    lanes_bytes = protobuf.get_repeated_bytes(record, 2)
    if len(lanes_bytes) != LANES:
        raise SpqrStateFormatError("stored SPQR decoder does not have 16 lanes")
    lanes = []
    for packed in lanes_bytes:
        if len(packed) % 4 or len(packed) > 4 * 80:
            raise SpqrStateFormatError("stored SPQR decoder lane is malformed")
        points = tuple(
            (int.from_bytes(packed[i : i + 2], "big"), int.from_bytes(packed[i + 2 : i + 4], "big"))
            for i in range(0, len(packed), 4)
        )
        if list(points) != sorted(set(points)) or len({x for x, _ in points}) != len(points):
            raise SpqrStateFormatError("stored SPQR decoder lane is not sorted by x")
        lanes.append(points)
    return ChunkDecoder(length, tuple(lanes))


_BYTES_LENGTHS: Final[dict[str, tuple[int, ...]]] = {
    "dk": (mlkem768.SEED_SIZE, mlkem768.EXPANDED_KEY_SIZE),
    "header": (mlkem768.HEADER_SIZE,),
    "vector": (mlkem768.VECTOR_SIZE,),
    "ct1": (mlkem768.CIPHERTEXT1_SIZE,),
    "encaps_state": (mlkem768.ENCAPS_STATE_SIZE,),
}
_ENCODER_LENGTHS: Final = {
    "sending_hdr": braid.HEADER_MESSAGE_SIZE,
    "sending_ek": mlkem768.VECTOR_SIZE,
    "sending_ct1": mlkem768.CIPHERTEXT1_SIZE,
    "sending_ct2": braid.CT2_MESSAGE_SIZE,
}
_DECODER_LENGTHS: Final = {
    "receiving_ct1": mlkem768.CIPHERTEXT1_SIZE,
    "receiving_ct2": braid.CT2_MESSAGE_SIZE,
    "receiving_hdr": braid.HEADER_MESSAGE_SIZE,
    "receiving_ek": mlkem768.VECTOR_SIZE,
}


def _read_braid(data: bytes) -> braid.BraidState:
    record = protobuf.parse(data, _BRAID_SCHEMA)
    number = protobuf.get_uint(record, 1, "braid state", len(_BRAID_CLASSES))
    if number == 0:
        raise SpqrStateFormatError("stored SPQR braid state number 0 is invalid")
    cls = _BRAID_CLASSES[number - 1]
    epoch = protobuf.get_uint(record, 2, "epoch")
    if epoch == 0:
        raise SpqrStateFormatError("stored SPQR epoch 0 is invalid")
    values: dict[str, object] = {
        "epoch": epoch,
        "auth": Authenticator(_fixed(record, 3, "root key", 32), _fixed(record, 4, "MAC key", 32)),
    }
    for item in fields(cls):
        if item.name in _BYTES_FIELDS:
            values[item.name] = _fixed(record, _BYTES_FIELDS[item.name], item.name, _BYTES_LENGTHS[item.name])
        elif item.name in _ENCODER_FIELDS:
            values[item.name] = _read_encoder(
                protobuf.get_bytes(record, 10, "encoder"), _ENCODER_LENGTHS[item.name]
            )
        elif item.name in _DECODER_FIELDS:
            values[item.name] = _read_decoder(
                protobuf.get_bytes(record, 11, "decoder"), _DECODER_LENGTHS[item.name]
            )
    state: braid.BraidState = cls(**values)
    return state


def _read_state(data: bytes) -> SpqrState:
    record = protobuf.parse(data, _MESSAGE_SCHEMA)
    version = Version(protobuf.get_uint(record, 1, "version", 1))
    negotiation = None
    if 2 in record:
        n = protobuf.parse(protobuf.get_bytes(record, 2, "negotiation"), _NEGOTIATION_SCHEMA)
        negotiation = _Negotiation(
            _fixed(n, 1, "auth key", 32),
            Direction(protobuf.get_uint(n, 2, "direction", 1)),
            Version(protobuf.get_uint(n, 3, "min version", 1)),
            _read_params(n, 4, 5),
        )
    chain = _read_chain(protobuf.get_bytes(record, 3, "chain")) if 3 in record else None
    state_braid = _read_braid(protobuf.get_bytes(record, 4, "braid")) if 4 in record else None
    if (version is Version.V1) != (state_braid is not None):
        raise SpqrStateFormatError("stored SPQR version does not match its braid")
    if (
        chain is None
        and state_braid is not None
        and (negotiation is None or negotiation.min_version is not Version.V0)
    ):
        raise SpqrStateFormatError("stored SPQR state lacks its chain")
    return SpqrState(state_braid, chain, negotiation)
