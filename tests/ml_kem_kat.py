"""The NIST-format ML-KEM-1024 known-answer file that the ``cryptography_vectors`` package ships,
read into records for the tests of :mod:`e2e.kem`, :mod:`e2e.fips203` and :mod:`e2e.kpke`.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography_vectors import open_vector_file

KAT_FILE = "asymmetric/MLKEM/kat_MLKEM_1024.rsp"


def ml_kem_1024_kat_records() -> list[dict[str, bytes]]:
    """Every record of the file in order: ``count`` (as text bytes) and its hex fields as bytes."""
    return list(_records())


def _records() -> Iterator[dict[str, bytes]]:
    record: dict[str, bytes] = {}
    with open_vector_file(KAT_FILE, "r") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            name, value = line.split(" = ")
            if name == "count":
                if record:
                    yield record
                record = {"count": value.encode()}
            else:
                record[name] = bytes.fromhex(value)
    if record:
        yield record
