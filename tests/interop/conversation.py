"""One scripted conversation between two parties, whatever implementation each side runs.

A *party* is anything with ``encrypt(plaintext) -> (message_type, body)`` and
``decrypt(message_type, body) -> plaintext``, where ``message_type`` is libsignal's number
(2 = SignalMessage, 3 = PreKeySignalMessage).  :func:`run_conversation` plays the same script
between an Alice who has processed Bob's bundle and that Bob, delivers each message in a chosen
order, and checks every plaintext that comes out.  The script covers what tends to break
between implementations:

1. several PreKey messages from Alice before Bob has answered, delivered out of order (the
   second one creates Bob's session, the first then reuses it);
2. replies, after which Alice's messages must be plain SignalMessages;
3. out-of-order delivery across DH ratchet steps in both directions: the receiver gets a message
   of a new chain before the rest of the previous chain, so it must store the skipped keys of the
   old chain up to ``PN`` and of the new chain up to ``N``;
4. plaintexts at the AES block boundaries (0, 1, 15, 16, 17 bytes) and of 64 KiB each way;
5. a closing run of alternating messages (a DH ratchet step per message).

:class:`Transcript` records every message sent, so tests can assert the message types too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from e2e.wire import PreKeySignalMessage, SignalMessage

WHISPER = 2
PREKEY = 3
LARGE = 64 * 1024


class Party(Protocol):
    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]: ...

    def decrypt(self, message_type: int, body: bytes) -> bytes: ...


@dataclass(frozen=True)
class Sent:
    """One message as it went over the wire: sender, libsignal type, lengths and ratchet header.

    ``counter`` and ``previous_counter`` are read with our decoder, so that two transcripts of the
    same script can be compared header for header whichever implementations produced them.
    """

    sender: str
    message_type: int
    plaintext_length: int
    wire_length: int
    counter: int
    previous_counter: int

    def shape(self) -> tuple[str, int, int, int, int]:
        """Everything but the random key material: equal for any two correct implementations."""
        return (self.sender, self.message_type, self.wire_length, self.counter, self.previous_counter)


@dataclass
class Transcript:
    sent: list[Sent] = field(default_factory=list)
    delivered: int = 0

    def types(self, sender: str) -> list[int]:
        return [message.message_type for message in self.sent if message.sender == sender]

    def shape(self) -> list[tuple[str, int, int, int, int]]:
        return [message.shape() for message in self.sent]


class _Plaintexts:
    """Reproducible plaintexts for one conversation (SHA-256 in counter mode)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed.to_bytes(8, "big")
        self._counter = 0

    def __call__(self, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return bytes(out[:length])


class _Wire:
    """Messages in flight: encrypt now, deliver later in any order, check what comes out."""

    def __init__(self, parties: dict[str, Party], transcript: Transcript, plaintexts: _Plaintexts) -> None:
        self._parties = parties
        self._transcript = transcript
        self._plaintexts = plaintexts

    def send(self, sender: str, length: int = 48) -> tuple[str, int, bytes, bytes]:
        plaintext = self._plaintexts(length)
        message_type, body = self._parties[sender].encrypt(plaintext)
        if message_type == PREKEY:
            header = PreKeySignalMessage.deserialize(body).message
        else:
            header = SignalMessage.deserialize(body)
        self._transcript.sent.append(
            Sent(sender, message_type, length, len(body), header.counter, header.previous_counter)
        )
        return sender, message_type, body, plaintext

    def deliver(self, *messages: tuple[str, int, bytes, bytes]) -> None:
        for sender, message_type, body, plaintext in messages:
            receiver = "bob" if sender == "alice" else "alice"
            received = self._parties[receiver].decrypt(message_type, body)
            assert received == plaintext, f"{receiver} decrypted something else ({len(received)} bytes)"
            self._transcript.delivered += 1


def _crossed_chains(wire: _Wire, sender: str) -> None:
    """Out-of-order delivery across one DH ratchet step of ``sender``'s sending chain."""
    receiver = "bob" if sender == "alice" else "alice"
    old = [wire.send(sender) for _ in range(3)]
    wire.deliver(old[0])
    # The receiver answers; the sender's next messages then start a new chain.
    wire.deliver(wire.send(receiver))
    new = [wire.send(sender) for _ in range(2)]
    # Newest first: the receiver must keep the keys of old[1], old[2] (from PN) and new[0].
    wire.deliver(new[1], old[2], old[1], new[0])


def run_conversation(alice: Party, bob: Party, seed: int) -> Transcript:
    """Play the whole script; Alice must already hold a session built from Bob's bundle."""
    transcript = Transcript()
    wire = _Wire({"alice": alice, "bob": bob}, transcript, _Plaintexts(seed))

    # 1. Three PreKey messages before any reply, the second delivered first.
    first = [wire.send("alice") for _ in range(3)]
    wire.deliver(first[1], first[0], first[2])

    # 2. Two replies, delivered in reverse; then Alice writes again.
    replies = [wire.send("bob") for _ in range(2)]
    wire.deliver(replies[1], replies[0])
    wire.deliver(wire.send("alice"))

    # 3. Out of order across ratchet steps, each side in turn.
    _crossed_chains(wire, "alice")
    _crossed_chains(wire, "bob")
    _crossed_chains(wire, "alice")

    # 4. Block boundaries and 64 KiB, both ways.
    for length in (0, 1, 15, 16, 17, LARGE):
        wire.deliver(wire.send("alice", length))
        wire.deliver(wire.send("bob", length))

    # 5. Alternating replies: a DH ratchet step per message.
    for _ in range(3):
        wire.deliver(wire.send("alice"))
        wire.deliver(wire.send("bob"))
    return transcript


def check_types(transcript: Transcript) -> None:
    """Alice's first three messages are PreKey messages; every later message is a SignalMessage."""
    alice_types = transcript.types("alice")
    assert alice_types[:3] == [PREKEY] * 3, alice_types[:3]
    assert set(alice_types[3:]) == {WHISPER}, alice_types
    assert set(transcript.types("bob")) == {WHISPER}
    assert transcript.delivered == len(transcript.sent)
