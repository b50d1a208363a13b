"""KEM benchmark: Kyber-1024 round 3 (e2e.kyber, pure Python) beside ML-KEM-1024 (OpenSSL and pure Python).

Run ``make bench-kem`` (or ``python benchmarks/kem_bench.py``).  Prints two tables of
milliseconds of CPU time, each figure the best of ``--rounds`` rounds of ``--count`` operations:

* per KEM operation (key generation, encapsulation, decapsulation, and encapsulation plus
  decapsulation, the KEM work of one session start);
* per session setup through ``SessionRecord``: Alice's ``initiate`` and first ``encrypt``, Bob's
  ``decrypt_prekey_message`` of it, for X3DH (version 3), the project's ML-KEM PQXDH (version 3)
  and Signal's Kyber PQXDH (version 4, without SPQR).  Bundles are made before timing.

Compare rows of one run.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

from e2e import fips203, kem, kyber
from e2e.keys import KeyPair
from e2e.session import SessionRecord
from e2e.wire import PreKeySignalMessage
from e2e.x3dh import PreKeyBundle


def _rng(label: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(label + counter.to_bytes(8, "big")).digest(n)

    return rng


def _best(operation: Callable[[], object], count: int, rounds: int) -> float:
    """Milliseconds of CPU time per call: the best of ``rounds`` rounds of ``count`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(count):
            operation()
        best = min(best, (time.process_time() - start) / count)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    count, rounds = arguments.count, arguments.rounds
    rng = _rng(b"kem-bench")

    kyber_pair = kyber.KyberKeyPair.generate(rng)
    kyber_ct, _ = kyber.encapsulate(kyber_pair.public_key, rng)
    ml_kem_pair = kem.KemKeyPair.generate(rng)
    ml_kem_ct, _ = kem.encapsulate(ml_kem_pair.public_key)
    ml_ek, ml_dk = fips203.keygen_internal(rng(32), rng(32))
    _, ml_c = fips203.encaps_internal(ml_ek, rng(32))

    rows = {
        "Kyber-1024 r3, e2e.kyber (pure Python)": (
            _best(lambda: kyber.KyberKeyPair.generate(rng), count, rounds),
            _best(lambda: kyber.encapsulate(kyber_pair.public_key, rng), count, rounds),
            _best(lambda: kyber_pair.decapsulate(kyber_ct), count, rounds),
        ),
        "ML-KEM-1024, e2e.kem (OpenSSL)": (
            _best(lambda: kem.KemKeyPair.generate(rng), count, rounds),
            _best(lambda: kem.encapsulate(ml_kem_pair.public_key), count, rounds),
            _best(lambda: ml_kem_pair.decapsulate(ml_kem_ct), count, rounds),
        ),
        "ML-KEM-1024, e2e.fips203 (pure Python)": (
            _best(lambda: fips203.keygen_internal(rng(32), rng(32)), count, rounds),
            _best(lambda: fips203.encaps_internal(ml_ek, rng(32)), count, rounds),
            _best(lambda: fips203.decaps_internal(ml_dk, ml_c), count, rounds),
        ),
    }
    print(f"{'ms of CPU per operation':42} {'keygen':>8} {'encaps':>8} {'decaps':>8} {'enc+dec':>8}")
    for name, (keygen, encaps, decaps) in rows.items():
        print(f"{name:42} {keygen:8.3f} {encaps:8.3f} {decaps:8.3f} {encaps + decaps:8.3f}")
    print()
    print(f"{'ms of CPU per session setup':42} {'Alice':>8} {'Bob':>8} {'both':>8}")
    for name, (alice, bob) in _setups(rng, count, rounds).items():
        print(f"{name:42} {alice:8.3f} {bob:8.3f} {alice + bob:8.3f}")


def _setups(rng: Callable[[int], bytes], count: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Milliseconds per session setup (Alice's side, Bob's side) for each agreement."""
    bob_identity, signed = KeyPair.generate(rng), KeyPair.generate(rng)
    base = PreKeyBundle(
        registration_id=2,
        device_id=1,
        identity_key=bob_identity.public_key,
        signed_pre_key_id=1,
        signed_pre_key=signed.public_key,
        signed_pre_key_signature=bob_identity.sign(signed.public_key.serialize(), rng),
    )
    ml_kem = kem.KemKeyPair.generate(rng)
    kyber_pair = kyber.KyberKeyPair.generate(rng)
    bundles: dict[str, tuple[PreKeyBundle, kem.KemKeyPair | kyber.KyberKeyPair | None]] = {
        "X3DH (v3)": (base, None),
        "PQXDH ML-KEM-1024, OpenSSL (v3)": (
            replace(
                base,
                kem_pre_key_id=3,
                kem_pre_key=ml_kem.public_key,
                kem_pre_key_signature=bob_identity.sign(ml_kem.public_key.serialize(), rng),
            ),
            ml_kem,
        ),
        "PQXDH Kyber-1024 (v4, no SPQR)": (
            replace(
                base,
                kem_pre_key_id=4,
                kem_pre_key=kyber_pair.public_key,
                kem_pre_key_signature=bob_identity.sign(kyber_pair.public_key.serialize(), rng),
            ),
            kyber_pair,
        ),
    }
    alice_identity = KeyPair.generate(rng)
    results: dict[str, tuple[float, float]] = {}
    for name, (bundle, kem_pair) in bundles.items():

        def alice(bundle: PreKeyBundle = bundle) -> bytes:
            return SessionRecord.initiate(alice_identity, 1, bundle, rng).encrypt(b"hello", rng).body

        first = PreKeySignalMessage.deserialize(alice())

        def bob(
            first: PreKeySignalMessage = first,
            kem_pair: kem.KemKeyPair | kyber.KyberKeyPair | None = kem_pair,
        ) -> bytes:
            return SessionRecord().decrypt_prekey_message(
                first, bob_identity, signed, None, rng, our_registration_id=2, our_kem_pre_key=kem_pair
            )

        results[name] = (_best(alice, count, rounds), _best(bob, count, rounds))
    return results


if __name__ == "__main__":
    main()
