"""The erasure code that splits SPQR's large values into 32-byte chunks.

What this module owns
---------------------
:class:`Chunk` (an index and 32 bytes), :class:`ChunkEncoder` (a message in, an endless stream of
chunks out) and :class:`ChunkDecoder` (chunks in, the message out once enough have arrived), the
code Signal's SparsePostQuantumRatchet calls its polynomial encoding.  Byte for byte the same
chunks as the crate produces, because the construction below leaves no freedom.

The construction
----------------
A message of ``2·N`` bytes is read as ``N`` big-endian 16-bit values ``v[0..N)``, elements of
GF(2¹⁶) (:mod:`e2e.spqr.gf16`).  They are dealt round-robin onto 16 *lanes*: value ``i`` goes to
lane ``i mod 16`` at position ``x = i div 16``.  Lane ``p`` so holds the points
``(x, v[16x + p])`` for ``x = 0, 1, …``, and there is exactly one polynomial ``f_p`` of degree
below the number of points that passes through them (Lagrange).

Chunk number ``j`` (``0 ≤ j < 65536``) carries ``f_0(j), f_1(j), …, f_15(j)``, each as two
big-endian bytes.  While ``j`` is below a lane's point count, ``f_p(j)`` is simply the message
value itself, so the first ``⌈N/16⌉`` chunks are the message verbatim (a *systematic* code); every
later chunk is a fresh evaluation.  Any ``⌈N/16⌉`` distinct chunks determine every ``f_p`` and so
the message: a receiver that misses or reorders chunks needs only enough of them, never
particular ones.  SPQR's values are 96 bytes (header and MAC: 3 chunks), 1,152 bytes (the
encapsulation-key vector: 36 chunks), 960 bytes (the first ciphertext part: 30 chunks) and
160 bytes (the second part and MAC: 5 chunks).

Evaluation and interpolation use the barycentric form of the Lagrange polynomial: with weights
``w_i = 1 / ∏_{k≠i} (x_i − x_k)``, ``f(x) = ∏_k (x − x_k) · Σ_i w_i·y_i / (x − x_i)``.  For the
encoder the nodes are always ``0..n-1``, so its weights are computed once per ``n`` and cached.
Everything of an evaluation that depends only on ``n`` and the point ``x`` (the per-node factors
``w_i / (x − x_i)`` as logarithms, and ``∏_k (x − x_k)``) is the same for the 16 lanes, and for
every session, whose chunk indices all run 0, 1, 2, …: it is computed once per ``(n, x)`` and
cached, and each lane then costs one table look-up and one XOR per node, done by ``map`` and
``reduce`` (a sender pays this once per message, the hot path of a one-way burst).

Invariants
----------
Encoders and decoders are immutable: :meth:`ChunkEncoder.next_chunk` and
:meth:`ChunkDecoder.add_chunk` return new objects.  A decoder holds, per lane, at most the points
it needs plus the low-index ones that let it skip interpolation (the crate keeps the same set),
so memory is bounded whatever a peer sends.  A chunk that gives a different value for a point
the decoder already holds raises :class:`~e2e.spqr.errors.InconsistentChunkError`: an honest
encoder never does that, and refusing it keeps a forged chunk from silently poisoning the
reassembly.  A chunk that is merely wrong (and new) cannot be recognised here; the value it
corrupts fails its MAC or hash check one layer up, and the enclosing Signal message's MAC refuses
the message before that.

What it does not know
---------------------
What the bytes mean, epochs, or the wire format of a chunk inside an SPQR message
(:mod:`e2e.spqr.message`).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache, reduce
from itertools import repeat
from operator import add, xor
from typing import Final

from e2e.spqr import gf16
from e2e.spqr.errors import InconsistentChunkError

__all__ = ["CHUNK_SIZE", "LANES", "MAX_CHUNK_INDEX", "Chunk", "ChunkEncoder", "ChunkDecoder"]

CHUNK_SIZE: Final = 32
"""Bytes of message data in one chunk."""
LANES: Final = CHUNK_SIZE // 2
"""Field elements per chunk, and so the number of interleaved polynomials (16)."""
MAX_CHUNK_INDEX: Final = 0xFFFF
"""Chunk indices are 16-bit: the x coordinate is a field element."""
_MAX_MESSAGE_LENGTH: Final = 2 * LANES * (MAX_CHUNK_INDEX + 1)

_PACK_LANES: Final = struct.Struct(">16H").pack
_LOG: Final = gf16.log_table()
_EXP: Final = gf16.exp_table()
_GROUP: Final = gf16.ORDER - 1
# The "logarithm" of 0 for the encoder's lanes: it indexes the zero tail of _EXP_OR_ZERO, so a
# zero value adds nothing to an XOR sum without a test.  (_EXP is 2·(2¹⁶ − 1) long; every offset
# below is under 2¹⁶ − 1.)
_ZERO_LOG: Final = 2 * _GROUP
_EXP_OR_ZERO: Final = [*_EXP, *([0] * _GROUP)]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: its index (the evaluation point) and 32 bytes (16 big-endian values)."""

    index: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_CHUNK_INDEX:
            raise ValueError("a chunk index is a 16-bit integer")
        if len(self.data) != CHUNK_SIZE:
            raise ValueError(f"a chunk carries {CHUNK_SIZE} bytes")


def _weights(xs: tuple[int, ...]) -> list[int]:
    """Barycentric weights, as logarithms: ``log(1 / ∏_{k≠i} (x_i − x_k))`` for each node."""
    weights = []
    for i, xi in enumerate(xs):
        log_product = 0
        for k, xk in enumerate(xs):
            if k != i:
                log_product += _LOG[xi ^ xk]
        weights.append((-log_product) % _GROUP)
    return weights


@lru_cache(maxsize=64)
def _consecutive_weights(n: int) -> tuple[int, ...]:
    return tuple(_weights(tuple(range(n))))


def _evaluate(
    xs: tuple[int, ...], log_weights: tuple[int, ...] | list[int], ys: tuple[int, ...] | list[int], x: int
) -> int:
    """The polynomial through ``(xs[i], ys[i])`` at ``x``, which must not be one of ``xs``."""
    log_node_product = 0
    total = 0
    for xi, log_wi, yi in zip(xs, log_weights, ys, strict=True):
        log_difference = _LOG[x ^ xi]
        log_node_product += log_difference
        if yi:
            total ^= _EXP[(log_wi + _LOG[yi] - log_difference) % _GROUP]
    if total == 0:
        return 0
    return _EXP[(log_node_product + _LOG[total]) % _GROUP]


@lru_cache(maxsize=64)
def _lane_logs(points: tuple[int, ...]) -> tuple[int, ...]:
    """The logarithms of one lane's values (``_ZERO_LOG`` for 0), for :func:`_evaluate_lane`."""
    return tuple(_LOG[y] if y else _ZERO_LOG for y in points)


@lru_cache(maxsize=1024)
def _evaluation_row(n: int, x: int) -> tuple[tuple[int, ...], int]:
    """For the nodes ``0..n-1`` and a point ``x ≥ n``: ``log(w_i / (x − i))`` for each node (each
    below 2¹⁶ − 1) and ``log ∏_i (x − i)`` reduced the same way."""
    weights = _consecutive_weights(n)
    differences = [_LOG[x ^ i] for i in range(n)]
    offsets = tuple(
        (weight - difference) % _GROUP for weight, difference in zip(weights, differences, strict=True)
    )
    return offsets, sum(differences) % _GROUP


def _evaluate_lane(points: tuple[int, ...], x: int) -> int:
    """The polynomial through ``(i, points[i])`` at ``x ≥ len(points)``: :func:`_evaluate` with the
    factors that do not depend on the lane taken from :func:`_evaluation_row`."""
    offsets, log_node_product = _evaluation_row(len(points), x)
    total = reduce(xor, map(_EXP_OR_ZERO.__getitem__, map(add, offsets, _lane_logs(points))), 0)
    if total == 0:
        return 0
    return _EXP[log_node_product + _LOG[total]]


@lru_cache(maxsize=64)
def _node_logs(lanes: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """For lanes of equal length: per node ``i``, the 16 lanes' ``log y_i`` (``_ZERO_LOG`` for 0)."""
    return tuple(
        tuple(_LOG[points[i]] if points[i] else _ZERO_LOG for points in lanes) for i in range(len(lanes[0]))
    )


def _evaluate_by_node(lanes: tuple[tuple[int, ...], ...], x: int) -> list[int]:
    """Every lane's polynomial at ``x`` (lanes of equal length ``n ≤ x``), node by node: the same
    sums as :func:`_evaluate_lane`, in ``n`` passes over the 16 lanes instead of 16 over ``n``."""
    offsets, log_node_product = _evaluation_row(len(lanes[0]), x)
    exp_or_zero = _EXP_OR_ZERO.__getitem__
    node_logs = _node_logs(lanes)
    totals: Iterator[int] = map(exp_or_zero, map(add, repeat(offsets[0], LANES), node_logs[0]))
    for offset, logs in zip(offsets[1:], node_logs[1:], strict=True):
        totals = map(xor, totals, map(exp_or_zero, map(add, repeat(offset, LANES), logs)))
    exp, log = _EXP, _LOG
    return [exp[log_node_product + log[total]] if total else 0 for total in totals]


@lru_cache(maxsize=16)
def _needed_points(length: int) -> tuple[int, ...]:
    """How many points each lane needs to decode a message of ``length`` bytes."""
    values = length // 2
    return tuple(values // LANES + (1 if lane < values % LANES else 0) for lane in range(LANES))


@dataclass(frozen=True, slots=True)
class ChunkEncoder:
    """The chunk stream of one message; :meth:`next_chunk` returns the next one and a new encoder.

    ``next_index`` counts chunks handed out (a 32-bit counter, as the crate's); the chunk index
    is its low 16 bits, so after 65,536 chunks the stream repeats itself, which is harmless.
    """

    lanes: tuple[tuple[int, ...], ...]
    next_index: int = 0

    @classmethod
    def encode(cls, message: bytes) -> ChunkEncoder:
        """An encoder for ``message``, whose length must be even (and below 2 MiB)."""
        if len(message) % 2:
            raise ValueError("the erasure code encodes messages of even length")
        if len(message) > _MAX_MESSAGE_LENGTH:
            raise ValueError("message too long for 16-bit chunk indices")
        values = [message[i] << 8 | message[i + 1] for i in range(0, len(message), 2)]
        return cls(tuple(tuple(values[lane::LANES]) for lane in range(LANES)))

    def chunk_at(self, index: int) -> Chunk:
        """Chunk number ``index`` (0..65535): ``f_p(index)`` for every lane ``p``."""
        lanes = self.lanes
        if index < len(lanes[-1]):
            # A systematic chunk (every lane still holds a message value at this index): the
            # message's own bytes.  Lane 15 is the shortest, so it decides.
            return Chunk(index, _PACK_LANES(*(points[index] for points in lanes)))
        n = len(lanes[0])
        if 0 < n == len(lanes[-1]) and n < LANES:
            # Every lane has the same few points (SPQR's header: 3; its last ciphertext part: 5):
            # one pass per node over all 16 lanes at once.
            return Chunk(index, _PACK_LANES(*_evaluate_by_node(lanes, index)))
        # (The body of _evaluate_lane, inlined: this loop is a sender's hot path.)
        values = []
        rows: dict[int, tuple[tuple[int, ...], int]] = {}
        exp_or_zero, exp, log = _EXP_OR_ZERO.__getitem__, _EXP, _LOG
        for points in lanes:
            n = len(points)
            if index < n:
                values.append(points[index])
                continue
            if n == 0:
                values.append(0)
                continue
            row = rows.get(n)
            if row is None:
                row = rows[n] = _evaluation_row(n, index)
            offsets, log_node_product = row
            total = reduce(xor, map(exp_or_zero, map(add, offsets, _lane_logs(points))), 0)
            values.append(exp[log_node_product + log[total]] if total else 0)
        return Chunk(index, _PACK_LANES(*values))

    def next_chunk(self) -> tuple[ChunkEncoder, Chunk]:
        """The next chunk of the stream, with the encoder that continues after it."""
        chunk = self.chunk_at(self.next_index & MAX_CHUNK_INDEX)
        return ChunkEncoder(self.lanes, (self.next_index + 1) & 0xFFFF_FFFF), chunk

    def __repr__(self) -> str:
        points = sum(len(lane) for lane in self.lanes)
        return f"ChunkEncoder(<{2 * points} bytes>, next_index={self.next_index})"


@dataclass(frozen=True, slots=True)
class ChunkDecoder:
    """The reassembly of one message of ``length`` bytes from chunks in any order.

    ``lanes[p]`` holds the points received for lane ``p``, sorted by x.
    """

    length: int
    lanes: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def new(cls, length: int) -> ChunkDecoder:
        """An empty decoder for a message of ``length`` bytes (even)."""
        if length % 2 or not 0 <= length <= _MAX_MESSAGE_LENGTH:
            raise ValueError("the erasure code decodes messages of even length")
        return cls(length, ((),) * LANES)

    def _needed(self, lane: int) -> int:
        return _needed_points(self.length)[lane]

    def add_chunk(self, chunk: Chunk) -> ChunkDecoder:
        """The decoder with ``chunk`` added.

        Raises :class:`~e2e.spqr.errors.InconsistentChunkError` (and returns nothing) when the
        chunk disagrees with a point already held.
        """
        x = chunk.index
        data = chunk.data
        lanes = list(self.lanes)
        needed_points = _needed_points(self.length)
        for lane in range(LANES):
            y = data[2 * lane] << 8 | data[2 * lane + 1]
            points = lanes[lane]
            position = bisect_left(points, (x, -1))
            if position < len(points) and points[position][0] == x:
                if points[position][1] != y:
                    raise InconsistentChunkError(
                        f"chunk {x} contradicts an earlier chunk with the same index"
                    )
                continue
            needed = needed_points[lane]
            # Keep a point when the lane still lacks points, or when it is one of the message's
            # own values (x below the point count), which saves interpolating it later.
            if x < needed or len(points) < needed:
                lanes[lane] = (*points[:position], (x, y), *points[position:])
        return ChunkDecoder(self.length, tuple(lanes))

    def decoded(self) -> bytes | None:
        """The message once every lane has enough points, else ``None``."""
        needed_points = _needed_points(self.length)
        for points, needed in zip(self.lanes, needed_points, strict=True):
            if len(points) < needed:
                return None
        columns: list[list[int]] = []
        for lane in range(LANES):
            needed = needed_points[lane]
            held = dict(self.lanes[lane])
            basis = self.lanes[lane][:needed]
            xs = tuple(x for x, _ in basis)
            ys = [y for _, y in basis]
            weights: list[int] | None = None
            column = []
            for x in range(needed):
                value = held.get(x)
                if value is None:
                    if weights is None:
                        weights = _weights(xs)
                    value = _evaluate(xs, weights, ys, x)
                column.append(value)
            columns.append(column)
        out = bytearray()
        for i in range(self.length // 2):
            value = columns[i % LANES][i // LANES]
            out += value.to_bytes(2, "big")
        return bytes(out)

    def __repr__(self) -> str:
        held = sum(len(lane) for lane in self.lanes)
        return f"ChunkDecoder(length={self.length}, points_held={held})"
