"""A reader for the ``spqr`` crate's own serialized state (``PqRatchetState``), for tests.

The crate's test suite keeps two states of a lockstep run, 30 steps in, auth key ``[41; 32]``
(``src/issue1275_a_state.in`` and ``src/issue1275_b_state.in`` in signalapp/SparsePostQuantumRatchet
at fd320484dcec89004021e6fdc7481825f5f261fa; copied to ``tests/fixtures/spqr/``).  This module
turns such a state into an :class:`e2e.spqr.SpqrState` following the crate's schema
(``src/proto/pq_ratchet.proto``), so the tests can continue the crate's conversation with this
implementation.  It reads the states those fixtures contain (send_ek ``HeaderSent`` and send_ct
``Ct1Sampled``) and the simpler ones; it refuses ``EkReceivedCt1Sampled`` and ``Ct2Sampled``-free
edge cases it was not written for.  libcrux's encapsulation state ends with the encapsulation
randomness ``m``, which is all this implementation keeps.
"""

from __future__ import annotations

from e2e.protobuf import decode_varint
from e2e.spqr import braid
from e2e.spqr.authenticator import Authenticator
from e2e.spqr.chain import Chain, ChainDirection, ChainEpoch, ChainParams, Direction
from e2e.spqr.erasure import ChunkDecoder, ChunkEncoder
from e2e.spqr.state import SpqrState

Message = dict[int, list[int | bytes]]


def _parse(data: bytes) -> Message:
    out: Message = {}
    position = 0
    while position < len(data):
        tag, position = decode_varint(data, position, len(data))
        value: int | bytes
        if tag & 7 == 0:
            value, position = decode_varint(data, position, len(data))
        elif tag & 7 == 2:
            length, position = decode_varint(data, position, len(data))
            value = data[position : position + length]
            position += length
        else:
            raise ValueError(f"unexpected wire type {tag & 7}")
        out.setdefault(tag >> 3, []).append(value)
    return out


def _int(message: Message, number: int) -> int:
    value = message.get(number, [0])[0]
    assert isinstance(value, int)
    return value


def _bytes(message: Message, number: int) -> bytes:
    value = message.get(number, [b""])[0]
    assert isinstance(value, bytes)
    return value


def _all_bytes(message: Message, number: int) -> list[bytes]:
    return [value for value in message.get(number, []) if isinstance(value, bytes)]


def _direction(data: bytes) -> ChainDirection:
    message = _parse(data)
    prev = _bytes(message, 3)
    skipped = {int.from_bytes(prev[i : i + 4], "big"): prev[i + 4 : i + 36] for i in range(0, len(prev), 36)}
    return ChainDirection(_int(message, 1), _bytes(message, 2), skipped)


def _chain(data: bytes) -> Chain:
    message = _parse(data)
    params = _parse(_bytes(message, 6))
    links = []
    for link in _all_bytes(message, 3):
        halves = _parse(link)
        links.append(ChainEpoch(_direction(_bytes(halves, 1)), _direction(_bytes(halves, 2))))
    return Chain(
        direction=Direction(_int(message, 1)),
        current_epoch=_int(message, 2),
        send_epoch=_int(message, 5),
        links=tuple(links),
        next_root=_bytes(message, 4),
        params=ChainParams(_int(params, 1) or 25_000, _int(params, 2) or 2_000),
    )


def _encoder(data: bytes) -> ChunkEncoder:
    message = _parse(data)
    if _all_bytes(message, 3):
        raise NotImplementedError("encoders already switched to polynomial form are not read here")
    lanes = tuple(
        tuple(int.from_bytes(lane[i : i + 2], "big") for i in range(0, len(lane), 2))
        for lane in _all_bytes(message, 2)
    )
    return ChunkEncoder(lanes, _int(message, 1))


def _decoder(data: bytes) -> ChunkDecoder:
    message = _parse(data)
    lanes = tuple(
        tuple(
            sorted(
                (int.from_bytes(lane[i : i + 2], "big"), int.from_bytes(lane[i + 2 : i + 4], "big"))
                for i in range(0, len(lane), 4)
            )
        )
        for lane in _all_bytes(message, 3)
    )
    return ChunkDecoder(2 * _int(message, 1), lanes)


def _auth(data: bytes) -> Authenticator:
    message = _parse(data)
    return Authenticator(_bytes(message, 1), _bytes(message, 2))


def _braid(data: bytes) -> braid.BraidState:
    ((number, values),) = _parse(data).items()
    value = values[0]
    assert isinstance(value, bytes)
    chunked = _parse(value)
    uc = _parse(_bytes(chunked, 1))
    epoch, auth = _int(uc, 1), _auth(_bytes(uc, 2))
    if number == 1:
        return braid.KeysUnsampled(epoch, auth)
    if number == 3:
        return braid.HeaderSent(
            epoch, auth, _bytes(uc, 3), _encoder(_bytes(chunked, 2)), _decoder(_bytes(chunked, 3))
        )
    if number == 6:
        return braid.NoHeaderReceived(epoch, auth, _decoder(_bytes(chunked, 2)))
    if number == 8:
        encaps_state = _bytes(uc, 4)
        return braid.Ct1Sampled(
            epoch,
            auth,
            _bytes(uc, 3),
            encaps_state[-32:],
            _bytes(uc, 5),
            _encoder(_bytes(chunked, 2)),
            _decoder(_bytes(chunked, 3)),
        )
    raise NotImplementedError(f"crate V1State variant {number} is not read here")


def read_crate_state(data: bytes) -> SpqrState:
    """The crate's ``PqRatchetState`` bytes as an :class:`SpqrState` (negotiation finished)."""
    message = _parse(data)
    if 1 in message:
        raise NotImplementedError("states still negotiating are not read here")
    return SpqrState(_braid(_bytes(message, 3)), _chain(_bytes(message, 2)), None)
