"""KEM benchmark: Kyber-1024 round 3 (e2e.kyber, pure Python) beside ML-KEM-1024 (OpenSSL and pure Python).

Run ``make bench-kem`` (or ``python benchmarks/kem_bench.py``).  Prints one table of
milliseconds of CPU time per operation (key generation, encapsulation, decapsulation), each the
best of ``--rounds`` rounds of ``--count`` operations, and the cost of one v4 session start's KEM
work: the initiator's encapsulation plus the responder's decapsulation.  Compare rows of one run.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

from e2e import fips203, kem, kyber


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


if __name__ == "__main__":
    main()
