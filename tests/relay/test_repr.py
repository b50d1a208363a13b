"""Bodies and keys stay out of the relay's and the transport's reprs (and so out of logs and tracebacks)."""

from __future__ import annotations

from client.transport import IncomingMessage
from server.store import DeviceAddress, NewMessage, PreKeyRecord, StoredMessage

BODY = b"secret-ciphertext-bytes"
KEY = b"\x05" + b"K" * 32


def test_reprs_show_sizes_not_bytes():
    alice, bob = DeviceAddress("alice", 1), DeviceAddress("bob", 1)
    objects = [
        IncomingMessage(1, "alice", 1, "c", 1, BODY, 0),
        NewMessage(alice, bob, "c", 1, BODY),
        StoredMessage(1, alice, bob, "c", 1, BODY, 0.0),
        PreKeyRecord(7, KEY, b"S" * 64),
    ]
    for obj in objects:
        text = repr(obj)
        assert "bytes>" in text
        for secret in (BODY, KEY, b"S" * 64):
            assert repr(secret) not in text and secret.hex() not in text and secret.decode() not in text
