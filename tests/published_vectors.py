"""Readers for the published test vectors shipped in the ``cryptography-vectors`` package.

The files are opened with that package's own API (:func:`cryptography_vectors.open_vector_file`),
so the tests read exactly what the package installed.  Two formats occur:

* NIST style (RFC 7748 X25519, RFC 5869 HKDF): blocks of ``NAME = value`` lines separated by
  ``COUNT = n`` lines, ``#`` comments ignored;
* the Ed25519 reference set ``sign.input``: one vector a line,
  ``secret‖public : public : message : signature‖message :`` in hex.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography_vectors import open_vector_file


def load_nist_vectors(path: str) -> list[dict[str, str]]:
    """Every block of a NIST-style file as a ``{name: value}`` dict (names upper-cased)."""
    vectors: list[dict[str, str]] = []
    with open_vector_file(path, "r") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition("=")
            name, value = name.strip().upper(), value.strip()
            if name == "COUNT":
                vectors.append({})
                continue
            vectors[-1][name] = value
    return vectors


@dataclass(frozen=True)
class Ed25519Vector:
    seed: bytes
    public_key: bytes
    message: bytes
    signature: bytes


def load_ed25519_sign_input() -> list[Ed25519Vector]:
    """``asymmetric/Ed25519/sign.input``; its first three lines are RFC 8032 §7.1 TEST 1, 2 and 3."""
    vectors = []
    with open_vector_file("asymmetric/Ed25519/sign.input", "r") as handle:
        for line in handle:
            secret, public, message, signed, _ = line.strip().split(":")
            vectors.append(
                Ed25519Vector(
                    seed=bytes.fromhex(secret)[:32],
                    public_key=bytes.fromhex(public),
                    message=bytes.fromhex(message),
                    signature=bytes.fromhex(signed)[:64],
                )
            )
    return vectors
