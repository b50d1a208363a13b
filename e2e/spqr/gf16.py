"""Arithmetic in GF(2¹⁶), the field SPQR's erasure code works in.

What this module owns
---------------------
The field of 65,536 elements built as polynomials over GF(2) modulo
``x¹⁶ + x¹² + x³ + x + 1`` (:data:`MODULUS`, ``0x1100B``), the field Signal's
SparsePostQuantumRatchet uses for its chunk encoding.  An element is a Python ``int`` in
``0..65535`` whose bits are the polynomial's coefficients.  Addition and subtraction are the same
operation, XOR (characteristic 2); multiplication and division go through logarithm tables.

Why tables
----------
The polynomial ``x`` (the element ``2``) generates the multiplicative group: its powers run
through all 65,535 non-zero elements before returning to 1 (a test checks it).  So every non-zero
``a`` is ``2^log(a)`` and ``a·b = 2^(log a + log b)``; a multiplication is two list look-ups and an
addition, the fastest way to do it in pure Python.  The tables are built once, on first use.

Invariants
----------
Every function takes and returns elements in ``0..65535``; :func:`div` raises
:class:`ZeroDivisionError` for a zero divisor (callers never divide by zero: interpolation
divides by differences of distinct points).

What it does not know
---------------------
Chunks, polynomials or messages (:mod:`e2e.spqr.erasure`).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MODULUS", "ORDER", "mul", "div", "inverse"]

MODULUS: Final = 0x1100B
"""``x¹⁶ + x¹² + x³ + x + 1``, the reduction polynomial (SparsePostQuantumRatchet ``gf::POLY``)."""
ORDER: Final = 1 << 16
"""The number of elements of the field."""

_GROUP: Final = ORDER - 1


def _tables() -> tuple[list[int], list[int]]:
    # _EXP holds 2^i for i in 0..2·65534 so that log a + log b never needs a reduction modulo
    # 65535; _LOG[a] is the discrete logarithm of a (entry 0 is unused).
    exp = [0] * (2 * _GROUP)
    log = [0] * ORDER
    value = 1
    for i in range(_GROUP):
        exp[i] = value
        log[value] = i
        value <<= 1
        if value & ORDER:
            value ^= MODULUS
    for i in range(_GROUP, 2 * _GROUP):
        exp[i] = exp[i - _GROUP]
    return exp, log


_EXP, _LOG = _tables()


def mul(a: int, b: int) -> int:
    """``a · b`` in the field."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def div(a: int, b: int) -> int:
    """``a / b`` in the field; ``b`` must not be zero."""
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^16)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] - _LOG[b] + _GROUP]


def inverse(a: int) -> int:
    """``1 / a`` in the field; ``a`` must not be zero."""
    return div(1, a)


def log_table() -> list[int]:
    """The logarithm table (for the hot loops of :mod:`e2e.spqr.erasure`; do not modify)."""
    return _LOG


def exp_table() -> list[int]:
    """The antilogarithm table, doubled in length (for :mod:`e2e.spqr.erasure`; do not modify)."""
    return _EXP
