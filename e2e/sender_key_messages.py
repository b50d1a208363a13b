"""The two Sender Keys messages, in libsignal's framing and in the older python-axolotl framing.

What this module owns
---------------------
The wire formats of group messaging with Sender Keys (``docs/groups.md``):

* :class:`SenderKeyDistributionMessage`: what a sender hands every other member once, over the
  pairwise sessions, so that they can follow its sender chain: the chain's id, its current
  iteration and chain key, and the public half of the signing key its messages are signed with;
* :class:`SenderKeyMessage`: one group message, encrypted once for every member with the sender
  chain's message key and signed with the sender's signing key.

Two framings exist, and the caller always says which one it speaks (:class:`SenderKeyFraming`);
nothing here guesses from the bytes.  The cryptography is the same in both.

``SenderKeyFraming.LIBSIGNAL`` is libsignal's today (``rust/protocol/src/protocol.rs``)::

    SenderKeyMessage             = 0x33 ‖ protobuf{1: distribution_uuid (16), 2: chain_id,
                                                   3: iteration, 4: ciphertext} ‖ signature (64)
    SenderKeyDistributionMessage = 0x33 ‖ protobuf{1: distribution_uuid (16), 2: chain_id,
                                                   3: iteration, 4: chain_key (32),
                                                   5: signing_key (0x05 ‖ 32)}

``SenderKeyFraming.AXOLOTL`` is the WhatsApp-era framing of libsignal-protocol-java, which
python-axolotl speaks: no distribution uuid, the chain id is called the key ``id``::

    SenderKeyMessage             = 0x33 ‖ protobuf{1: id, 2: iteration, 3: ciphertext} ‖ signature
    SenderKeyDistributionMessage = 0x33 ‖ protobuf{1: id, 2: iteration, 3: chain_key,
                                                   4: signing_key}

The version byte is ``(3 << 4) | 3``.  The signature is XEdDSA by the sender's signing key over
every byte before it (version byte and protobuf).  The distribution message carries no signature:
it is only ever sent inside a pairwise session, which authenticates it.  Fields are written in
field-number order with every integer present (even 0), as libsignal writes them, so the bytes we
produce for given values are libsignal's bytes.  The two framings cannot be confused: field 1 is a
byte string in one and an integer in the other, and a strict decoder refuses the wrong wire type.

Strictness (every refusal is a :class:`~e2e.errors.DecodeError`)
----------------------------------------------------------------
The version byte must be exactly ``0x33`` (libsignal reads only its high nibble; no implementation
writes another low nibble).  Every field is present exactly once; ids and iterations are unsigned
32-bit; the distribution uuid is 16 bytes; the chain key is 32 bytes; the signing key is a
canonical Curve25519 key; the ciphertext is a non-empty whole number of AES blocks of at most
:data:`MAX_SENDER_KEY_CIPHERTEXT_LENGTH` bytes, and a longer message is refused unread.

What this module does not know
------------------------------
Sender-key state: which chain a message belongs to, whether its iteration is new, or which key
verifies it.  :mod:`e2e.group_cipher` looks the state up and calls :meth:`SenderKeyMessage.verify`
before anything else.  Parsing a message is safe on hostile bytes and changes nothing.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Final

from e2e import protobuf
from e2e.errors import DecodeError, InvalidKeyError
from e2e.keys import KEY_LENGTH, SIGNATURE_LENGTH, PrivateKey, PublicKey, Rng
from e2e.primitives import AES_BLOCK_SIZE

__all__ = [
    "SENDER_KEY_VERSION",
    "SENDER_KEY_VERSION_BYTE",
    "MAX_SENDER_KEY_CIPHERTEXT_LENGTH",
    "MAX_SENDER_KEY_MESSAGE_LENGTH",
    "SenderKeyFraming",
    "SenderKeyMessage",
    "SenderKeyDistributionMessage",
]

SENDER_KEY_VERSION: Final = 3
"""libsignal's ``SENDERKEY_MESSAGE_CURRENT_VERSION``, the only sender-key message version there is."""

SENDER_KEY_VERSION_BYTE: Final = (SENDER_KEY_VERSION << 4) | SENDER_KEY_VERSION

MAX_SENDER_KEY_CIPHERTEXT_LENGTH: Final = 256 * 1024
"""The largest AES ciphertext a SenderKeyMessage may carry (256 KiB, as for 1:1 messages)."""

# The version byte, four tags, a 16-byte uuid with its length, two varints of at most 5 bytes and
# a ciphertext length of at most 3 bytes, then the signature.
_MESSAGE_OVERHEAD: Final = 1 + (2 + 16) + 2 * (1 + 5) + (1 + 3) + SIGNATURE_LENGTH
MAX_SENDER_KEY_MESSAGE_LENGTH: Final = MAX_SENDER_KEY_CIPHERTEXT_LENGTH + _MESSAGE_OVERHEAD
"""The longest serialized SenderKeyMessage :meth:`SenderKeyMessage.deserialize` reads."""

# A distribution message is small and of fixed shape; anything longer is not one.
_MAX_DISTRIBUTION_LENGTH: Final = 1 + (2 + 16) + 2 * (1 + 5) + (2 + 32) + (2 + 33)

_UINT32_MAX: Final = 0xFFFF_FFFF
_UUID_LENGTH: Final = 16
_P: Final = 2**255 - 19


class SenderKeyFraming(enum.Enum):
    """Which protobuf framing a group speaks: libsignal's today, or python-axolotl's older one."""

    LIBSIGNAL = 1
    """libsignal 0.x (Signal today): distribution uuid and chain id in every message."""

    AXOLOTL = 2
    """libsignal-protocol-java as WhatsApp-era clients and python-axolotl have it: a key id only."""


# Field numbers per framing: (distribution uuid or None, chain id, iteration, ciphertext).
_MESSAGE_FIELDS: Final = {
    SenderKeyFraming.LIBSIGNAL: (1, 2, 3, 4),
    SenderKeyFraming.AXOLOTL: (None, 1, 2, 3),
}
# (distribution uuid or None, chain id, iteration, chain key, signing key).
_DISTRIBUTION_FIELDS: Final = {
    SenderKeyFraming.LIBSIGNAL: (1, 2, 3, 4, 5),
    SenderKeyFraming.AXOLOTL: (None, 1, 2, 3, 4),
}


def _schema(numbers: tuple[int | None, ...], integers: tuple[int | None, ...]) -> dict[int, protobuf.Field]:
    return {
        number: protobuf.Field(protobuf.VARINT if number in integers else protobuf.LEN)
        for number in numbers
        if number is not None
    }


_MESSAGE_SCHEMAS: Final = {
    framing: _schema(fields, fields[1:3]) for framing, fields in _MESSAGE_FIELDS.items()
}
_DISTRIBUTION_SCHEMAS: Final = {
    framing: _schema(fields, fields[1:3]) for framing, fields in _DISTRIBUTION_FIELDS.items()
}


def _check_framing(framing: object) -> SenderKeyFraming:
    if not isinstance(framing, SenderKeyFraming):
        raise TypeError("framing is a SenderKeyFraming: say which framing the group speaks")
    return framing


def _check_uint32(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT32_MAX:
        raise ValueError(f"{what} is an unsigned 32-bit integer")


def _check_distribution(framing: SenderKeyFraming, distribution_id: uuid.UUID | None) -> None:
    if framing is SenderKeyFraming.LIBSIGNAL:
        if not isinstance(distribution_id, uuid.UUID):
            raise ValueError("libsignal's framing carries a distribution id (a uuid.UUID)")
    elif distribution_id is not None:
        raise ValueError("python-axolotl's framing has no distribution id")


def _check_version(data: bytes, what: str) -> None:
    if not isinstance(data, bytes):
        raise DecodeError(f"a {what} is bytes, not {type(data).__name__}")
    if not data:
        raise DecodeError(f"an empty {what}")
    if data[0] != SENDER_KEY_VERSION_BYTE:
        raise DecodeError(
            f"a {what} of version byte 0x{data[0]:02x} (this code reads 0x{SENDER_KEY_VERSION_BYTE:02x})"
        )


def _read_uuid(fields: protobuf.Record, number: int) -> uuid.UUID:
    raw = protobuf.get_bytes(fields, number, "distribution id")
    if len(raw) != _UUID_LENGTH:
        raise DecodeError(f"a distribution id is {_UUID_LENGTH} bytes")
    return uuid.UUID(bytes=raw)


def _canonical_public_key(data: bytes, what: str) -> PublicKey:
    try:
        key = PublicKey.deserialize(data)
    except (DecodeError, InvalidKeyError) as error:
        raise DecodeError(f"{what}: {error}") from None
    if int.from_bytes(key.raw, "little") >= _P:
        raise DecodeError(f"{what} is not the canonical encoding of its key")
    return key


@dataclass(frozen=True, slots=True)
class SenderKeyMessage:
    """One group message (decoded, or freshly made); ``serialized`` holds its exact wire bytes.

    ``distribution_id`` is ``None`` exactly in the AXOLOTL framing.  ``chain_id`` is libsignal's
    ``chain_id`` (python-axolotl's key ``id``).  Call :meth:`verify` with the sender's signing key
    before trusting any field.
    """

    framing: SenderKeyFraming
    distribution_id: uuid.UUID | None
    chain_id: int
    iteration: int
    ciphertext: bytes
    signature: bytes
    serialized: bytes

    @classmethod
    def create(
        cls,
        framing: SenderKeyFraming,
        distribution_id: uuid.UUID | None,
        chain_id: int,
        iteration: int,
        ciphertext: bytes,
        our_signing_key: PrivateKey,
        rng: Rng,
    ) -> SenderKeyMessage:
        """Encode a message and sign it (64 bytes of ``rng`` for XEdDSA's nonce)."""
        _check_framing(framing)
        _check_distribution(framing, distribution_id)
        _check_uint32(chain_id, "a chain id")
        _check_uint32(iteration, "an iteration")
        if not ciphertext or len(ciphertext) % AES_BLOCK_SIZE:
            raise ValueError("the ciphertext is a non-empty whole number of AES blocks")
        if len(ciphertext) > MAX_SENDER_KEY_CIPHERTEXT_LENGTH:
            raise ValueError(f"a group message carries at most {MAX_SENDER_KEY_CIPHERTEXT_LENGTH} bytes")
        uuid_field, chain_field, iteration_field, ciphertext_field = _MESSAGE_FIELDS[framing]
        parts = [bytes((SENDER_KEY_VERSION_BYTE,))]
        if uuid_field is not None and distribution_id is not None:
            parts.append(protobuf.encode_bytes_field(uuid_field, distribution_id.bytes))
        parts.append(protobuf.encode_uint_field(chain_field, chain_id))
        parts.append(protobuf.encode_uint_field(iteration_field, iteration))
        parts.append(protobuf.encode_bytes_field(ciphertext_field, ciphertext))
        signed = b"".join(parts)
        signature = our_signing_key.sign(signed, rng)
        return cls(framing, distribution_id, chain_id, iteration, ciphertext, signature, signed + signature)

    @classmethod
    def deserialize(cls, data: bytes, framing: SenderKeyFraming) -> SenderKeyMessage:
        """Decode strictly in the given framing; anything else raises :class:`DecodeError`."""
        _check_framing(framing)
        _check_version(data, "SenderKeyMessage")
        if len(data) > MAX_SENDER_KEY_MESSAGE_LENGTH:
            raise DecodeError(f"a SenderKeyMessage is at most {MAX_SENDER_KEY_MESSAGE_LENGTH} bytes")
        if len(data) <= 1 + SIGNATURE_LENGTH:
            raise DecodeError("a SenderKeyMessage too short to hold a signature")
        uuid_field, chain_field, iteration_field, ciphertext_field = _MESSAGE_FIELDS[framing]
        fields = protobuf.parse(data[1:-SIGNATURE_LENGTH], _MESSAGE_SCHEMAS[framing])
        distribution_id = _read_uuid(fields, uuid_field) if uuid_field is not None else None
        chain_id = protobuf.get_uint(fields, chain_field, "chain id", _UINT32_MAX)
        iteration = protobuf.get_uint(fields, iteration_field, "iteration", _UINT32_MAX)
        ciphertext = protobuf.get_bytes(fields, ciphertext_field, "ciphertext")
        if not ciphertext or len(ciphertext) % AES_BLOCK_SIZE:
            raise DecodeError("the ciphertext is not a whole number of AES blocks")
        return cls(framing, distribution_id, chain_id, iteration, ciphertext, data[-SIGNATURE_LENGTH:], data)

    @property
    def signed_part(self) -> bytes:
        """The bytes the signature covers: everything before it."""
        return self.serialized[:-SIGNATURE_LENGTH]

    def verify(self, their_signing_key: PublicKey) -> None:
        """Check the signature; raises :class:`~e2e.errors.InvalidSignatureError` if it fails."""
        their_signing_key.verify(self.signed_part, self.signature)


@dataclass(frozen=True, slots=True)
class SenderKeyDistributionMessage:
    """A sender's chain as handed to the other members: id, iteration, chain key, signing key.

    ``distribution_id`` is ``None`` exactly in the AXOLOTL framing.  The chain key is a secret:
    whoever holds it reads every later message of the chain, so ``repr`` leaves it out.
    """

    framing: SenderKeyFraming
    distribution_id: uuid.UUID | None
    chain_id: int
    iteration: int
    chain_key: bytes
    signing_key: PublicKey

    def __post_init__(self) -> None:
        _check_framing(self.framing)
        _check_distribution(self.framing, self.distribution_id)
        _check_uint32(self.chain_id, "a chain id")
        _check_uint32(self.iteration, "an iteration")
        if not isinstance(self.chain_key, bytes) or len(self.chain_key) != KEY_LENGTH:
            raise ValueError(f"a chain key is {KEY_LENGTH} bytes")
        if not isinstance(self.signing_key, PublicKey):
            raise ValueError("the signing key is a PublicKey")

    def serialize(self) -> bytes:
        """The wire bytes in this message's framing (module docstring)."""
        fields = _DISTRIBUTION_FIELDS[self.framing]
        uuid_field, chain_field, iteration_field, key_field, signing_field = fields
        parts = [bytes((SENDER_KEY_VERSION_BYTE,))]
        if uuid_field is not None and self.distribution_id is not None:
            parts.append(protobuf.encode_bytes_field(uuid_field, self.distribution_id.bytes))
        parts.append(protobuf.encode_uint_field(chain_field, self.chain_id))
        parts.append(protobuf.encode_uint_field(iteration_field, self.iteration))
        parts.append(protobuf.encode_bytes_field(key_field, self.chain_key))
        parts.append(protobuf.encode_bytes_field(signing_field, self.signing_key.serialize()))
        return b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes, framing: SenderKeyFraming) -> SenderKeyDistributionMessage:
        """Decode strictly in the given framing; anything else raises :class:`DecodeError`."""
        _check_framing(framing)
        _check_version(data, "SenderKeyDistributionMessage")
        if len(data) > _MAX_DISTRIBUTION_LENGTH:
            raise DecodeError(f"a SenderKeyDistributionMessage is at most {_MAX_DISTRIBUTION_LENGTH} bytes")
        uuid_field, chain_field, iteration_field, key_field, signing_field = _DISTRIBUTION_FIELDS[framing]
        fields = protobuf.parse(data[1:], _DISTRIBUTION_SCHEMAS[framing])
        distribution_id = _read_uuid(fields, uuid_field) if uuid_field is not None else None
        chain_id = protobuf.get_uint(fields, chain_field, "chain id", _UINT32_MAX)
        iteration = protobuf.get_uint(fields, iteration_field, "iteration", _UINT32_MAX)
        chain_key = protobuf.get_bytes(fields, key_field, "chain key")
        if len(chain_key) != KEY_LENGTH:
            raise DecodeError(f"a chain key is {KEY_LENGTH} bytes")
        signing_bytes = protobuf.get_bytes(fields, signing_field, "signing key")
        signing_key = _canonical_public_key(signing_bytes, "signing key")
        return cls(framing, distribution_id, chain_id, iteration, chain_key, signing_key)

    def __repr__(self) -> str:
        return (
            f"SenderKeyDistributionMessage(framing={self.framing.name}, distribution_id="
            f"{self.distribution_id}, chain_id={self.chain_id}, iteration={self.iteration}, "
            f"chain_key=<redacted>, signing_key={self.signing_key!r})"
        )
