"""The protocol core: X3DH/PQXDH and the Double Ratchet in libsignal's v3 format, sans-I/O.

Each module owns one layer and opens with its theory; ``docs/protocol.md`` walks through them in
the order a conversation uses them.  The names below are the ones a front end needs most often.
"""

from e2e.fingerprint import DisplayableFingerprint, Fingerprint, ScannableFingerprint

__all__ = [
    "Fingerprint",
    "DisplayableFingerprint",
    "ScannableFingerprint",
]
