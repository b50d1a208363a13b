"""GF(2¹⁶) and the chunk erasure code: field laws, the systematic property, reassembly from any
sufficient subset in any order (against an independent Gaussian-elimination decoder), bounded
memory, and refusal of chunks that contradict earlier ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.spqr import gf16
from e2e.spqr.erasure import CHUNK_SIZE, LANES, Chunk, ChunkDecoder, ChunkEncoder
from e2e.spqr.errors import InconsistentChunkError, SpqrError

elements = st.integers(0, 0xFFFF)
nonzero = st.integers(1, 0xFFFF)


def _slow_mul(a: int, b: int) -> int:
    # Shift-and-add multiplication modulo the field polynomial, independent of the tables.
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & 0x10000:
            a ^= gf16.MODULUS
    return result


def test_two_generates_the_multiplicative_group() -> None:
    seen = set()
    value = 1
    for _ in range(gf16.ORDER - 1):
        seen.add(value)
        value = _slow_mul(value, 2)
    assert value == 1 and len(seen) == gf16.ORDER - 1


@given(elements, elements)
def test_multiplication_matches_shift_and_add(a: int, b: int) -> None:
    assert gf16.mul(a, b) == _slow_mul(a, b)


@given(elements, nonzero)
def test_division_inverts_multiplication(a: int, b: int) -> None:
    assert gf16.mul(gf16.div(a, b), b) == a
    assert gf16.mul(b, gf16.inverse(b)) == 1


def test_division_by_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        gf16.div(1, 0)


def test_the_crates_small_example() -> None:
    # The crate's encode_and_decode_small: "abcdefghij" from chunks 1 and 2, neither of which
    # holds the message itself.  Ten bytes fit one chunk, so chunk 1 alone already suffices.
    encoder = ChunkEncoder.encode(b"abcdefghij")
    decoder = ChunkDecoder.new(10).add_chunk(encoder.chunk_at(1))
    assert decoder.decoded() == b"abcdefghij"
    assert decoder.add_chunk(encoder.chunk_at(2)).decoded() == b"abcdefghij"
    assert ChunkDecoder.new(10).decoded() is None


def test_the_first_chunks_are_the_message_itself() -> None:
    message = bytes(range(256)) * 3 + bytes(128)
    encoder = ChunkEncoder.encode(message)
    # Value i sits in lane i mod 16 at position i div 16, so chunk j holds values 16j..16j+15.
    for j in range(len(message) // CHUNK_SIZE):
        assert encoder.chunk_at(j).data == message[32 * j : 32 * (j + 1)]


def _solve_lane(points: list[tuple[int, int]], x: int) -> int:
    # Independent check: solve the Vandermonde system for the coefficients by Gaussian
    # elimination over GF(2^16), then evaluate with Horner's rule.
    n = len(points)
    rows = []
    for xi, yi in points:
        row = []
        power = 1
        for _ in range(n):
            row.append(power)
            power = gf16.mul(power, xi)
        rows.append([*row, yi])
    for column in range(n):
        pivot = next(r for r in range(column, n) if rows[r][column])
        rows[column], rows[pivot] = rows[pivot], rows[column]
        scale = gf16.inverse(rows[column][column])
        rows[column] = [gf16.mul(v, scale) for v in rows[column]]
        for r in range(n):
            if r != column and rows[r][column]:
                factor = rows[r][column]
                rows[r] = [a ^ gf16.mul(factor, b) for a, b in zip(rows[r], rows[column], strict=True)]
    coefficients = [rows[i][n] for i in range(n)]
    value = 0
    for c in reversed(coefficients):
        value = gf16.mul(value, x) ^ c
    return value


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=2, max_size=160).filter(lambda b: len(b) % 2 == 0), st.integers(0, 0xFFFF))
def test_parity_chunks_are_the_interpolating_polynomials(message: bytes, index: int) -> None:
    encoder = ChunkEncoder.encode(message)
    chunk = encoder.chunk_at(index)
    for lane in range(LANES):
        values = list(encoder.lanes[lane])
        expected = _solve_lane(list(enumerate(values)), index) if values else 0
        assert chunk.data[2 * lane : 2 * lane + 2] == expected.to_bytes(2, "big")


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([96, 160, 960, 1152, 10, 34]).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.randoms(use_true_random=False))
    )
)
def test_any_sufficient_subset_in_any_order_decodes(case: tuple[bytes, object]) -> None:
    message, random = case
    needed = -(-len(message) // CHUNK_SIZE)
    indices = random.sample(range(3 * needed + 5), needed)  # type: ignore[attr-defined]
    encoder = ChunkEncoder.encode(message)
    decoder = ChunkDecoder.new(len(message))
    for count, index in enumerate(indices, 1):
        decoder = decoder.add_chunk(encoder.chunk_at(index))
        if count < needed:
            assert decoder.decoded() is None
    assert decoder.decoded() == message


def test_next_chunk_walks_the_stream_and_leaves_the_encoder_unchanged() -> None:
    encoder = ChunkEncoder.encode(bytes(range(64)))
    after, first = encoder.next_chunk()
    assert encoder.next_index == 0 and after.next_index == 1
    assert first == encoder.chunk_at(0)
    assert after.next_chunk()[1] == encoder.chunk_at(1)


def test_chunk_indices_wrap_after_65536() -> None:
    encoder = ChunkEncoder(ChunkEncoder.encode(bytes(range(64))).lanes, 0xFFFF)
    after, chunk = encoder.next_chunk()
    assert chunk.index == 0xFFFF
    assert after.next_chunk()[1].index == 0


def test_duplicates_are_harmless_and_memory_is_bounded() -> None:
    message = bytes(range(200)) * 5 + bytes(152)
    encoder = ChunkEncoder.encode(message)
    decoder = ChunkDecoder.new(len(message))
    for index in list(range(100, 130)) * 3 + list(range(1000, 1100)):
        decoder = decoder.add_chunk(encoder.chunk_at(index))
    # Each lane keeps at most the 36 points it needs (no low-index ones arrived).
    assert all(len(lane) <= 36 for lane in decoder.lanes)
    assert decoder.decoded() == message


def test_an_inconsistent_chunk_is_refused_and_changes_nothing() -> None:
    message = bytes(range(96))
    encoder = ChunkEncoder.encode(message)
    decoder = ChunkDecoder.new(96).add_chunk(encoder.chunk_at(7))
    forged = bytearray(encoder.chunk_at(7).data)
    forged[5] ^= 1
    with pytest.raises(InconsistentChunkError) as raised:
        decoder.add_chunk(Chunk(7, bytes(forged)))
    assert isinstance(raised.value, SpqrError)
    assert decoder == ChunkDecoder.new(96).add_chunk(encoder.chunk_at(7))
    assert decoder.add_chunk(encoder.chunk_at(0)).add_chunk(encoder.chunk_at(1)).decoded() == message


@pytest.mark.parametrize("length", [1, 33, 2 * 16 * 65536 + 2])
def test_odd_or_oversized_lengths_are_refused(length: int) -> None:
    with pytest.raises(ValueError):
        ChunkEncoder.encode(bytes(length))
    with pytest.raises(ValueError):
        ChunkDecoder.new(length)


def test_chunks_are_validated() -> None:
    with pytest.raises(ValueError):
        Chunk(0x10000, bytes(32))
    with pytest.raises(ValueError):
        Chunk(0, bytes(31))


def test_reprs_do_not_dump_contents() -> None:
    secret = b"\xaa" * 64
    assert "aa" not in repr(ChunkEncoder.encode(secret))
    assert "aaaa" not in repr(ChunkDecoder.new(64).add_chunk(ChunkEncoder.encode(secret).chunk_at(0)))
