"""NIST's AES-256 CTR_DRBG as the PQC known-answer generators use it (``rng.c``, ``randombytes``).

NIST SP 800-90A's CTR_DRBG with AES-256, no derivation function, no prediction resistance and no
reseeding: the generator the round-3 submissions' ``PQCgenKAT_kem.c`` seeds with a 48-byte
entropy input.  ``update`` is SP 800-90A §10.2.1.2 (``CTR_DRBG_Update``); ``random_bytes`` is
§10.2.1.5.1 without additional input, where a request that is not a whole number of blocks
discards the rest of its last block, as ``rng.c`` does.  Vector tooling only: it reproduces the
published files (:mod:`e2e.vectors.kinds`, kind ``kyber1024``), it is not a source of secrets.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["NistDrbg"]


class NistDrbg:
    """``randombytes_init(entropy_input, NULL, 256)`` then ``randombytes(n)`` calls."""

    def __init__(self, entropy_input: bytes) -> None:
        if len(entropy_input) != 48:
            raise ValueError("the KAT generator seeds its DRBG with 48 bytes")
        self._key = bytes(32)
        self._v = bytes(16)
        self._update(entropy_input)

    def _block(self) -> bytes:
        # V = (V + 1) mod 2^128, then one AES-256 block of it.
        self._v = ((int.from_bytes(self._v, "big") + 1) % (1 << 128)).to_bytes(16, "big")
        encryptor = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()  # noqa: S305
        return encryptor.update(self._v) + encryptor.finalize()

    def _update(self, provided_data: bytes | None) -> None:
        temp = b"".join(self._block() for _ in range(3))
        if provided_data is not None:
            temp = bytes(a ^ b for a, b in zip(temp, provided_data, strict=True))
        self._key, self._v = temp[:32], temp[32:]

    def random_bytes(self, n: int) -> bytes:
        """``randombytes(x, n)``: ``n`` bytes, then the state update that follows every request."""
        output = b""
        while len(output) < n:
            output += self._block()
        self._update(None)
        return output[:n]

    __call__ = random_bytes
