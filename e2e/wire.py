"""libsignal's message formats, versions 3 and 4: SignalMessage and PreKeySignalMessage, byte for byte.

What this module owns
---------------------
The two ciphertext messages of libsignal's protocol version 3 (``CiphertextMessage`` types
``WHISPER`` = 2 and ``PREKEY`` = 3), their encoding, their strict decoding and the MAC of a
SignalMessage.

SignalMessage (type 2)::

    0x33 ‖ protobuf{1: ratchet_key (0x05 ‖ 32), 2: counter, 3: previous_counter, 4: ciphertext} ‖ MAC[:8]
    MAC = HMAC-SHA256(mac_key, Encode(IK_sender) ‖ Encode(IK_receiver) ‖ 0x33 ‖ protobuf)

PreKeySignalMessage (type 3), Alice's messages until she hears back (X3DH §3.3)::

    0x33 ‖ protobuf{1: pre_key_id, 2: base_key, 3: identity_key, 4: SignalMessage,
                    5: registration_id, 6: signed_pre_key_id
                    [, 7: kem_pre_key_id, 8: kem_ciphertext (0x0A ‖ 1568)]}

Fields 7 and 8 are PQXDH's (PQXDH §3.3: the KEM ciphertext and the id of the KEM prekey it was
made for), at the numbers libsignal gives its ``kyber_pre_key_id`` and ``kyber_ciphertext``.  They
appear together or not at all; without them a message is byte for byte libsignal's v3 message.
libsignal marks its own PQXDH messages with message version 4; ours keep version 3 because they
are not libsignal's PQXDH (ML-KEM-1024 rather than Kyber1024, see :mod:`e2e.pqxdh`): a v3 peer
that skips the unknown fields runs X3DH, derives another key and fails at the MAC, loudly.

Version 4 (Signal's PQXDH with Kyber1024, :mod:`e2e.pqxdh_v4`; version byte ``0x44``)::

    0x44 ‖ protobuf{1: ratchet_key, 2: counter, 3: previous_counter, 4: ciphertext
                    [, 5: pq_ratchet] [, 6: addresses]} ‖ MAC[:8]
    0x44 ‖ protobuf{1..6 as in version 3, 7: kyber_pre_key_id, 8: kyber_ciphertext (0x08 ‖ 1568)}

Field 5 ``pq_ratchet`` carries the message of the session's post-quantum ratchet (SPQR; absent when
empty), field 6 ``addresses`` the sender's and recipient's service ids and device ids (36 bytes,
libsignal writes it only when both names are UUIDs).  This module treats both as opaque bytes: the
MAC covers them as it covers every other byte of the message, SPQR interprets field 5
(:mod:`e2e.ratchet`), and field 6 is the caller's to compare with the addresses it expects.  A
version-4 PreKeySignalMessage must carry fields 7 and 8 with a Kyber1024 ciphertext and wrap a
version-4 SignalMessage; a version-3 one carries them only for the project's ML-KEM PQXDH.

The version byte is ``(message version << 4) | sender's current version``: ``0x33`` for version 3
(as libsignal 0.x before Kyber, and python-axolotl, write it) and ``0x44`` for version 4, the only
combination libsignal writes today.  Any other byte is refused with the version it names.
Fields are written in field-number order, as every protobuf library writes them, so the bytes we
produce are the bytes libsignal produces for the same values.  The MAC covers the identity keys of
both parties (the X3DH associated data, X3DH §3.3) and the whole encoded header and ciphertext.
The PreKeySignalMessage has no MAC of its own: its X3DH fields are authenticated indirectly, since
a different base or identity key gives a different session and the inner MAC then fails.  Its
``registration_id`` and prekey ids are *not* authenticated by the format (they do not enter any
key derivation); a caller that looks keys up by id fails to find a tampered one, and the
registration id is informational.

Limits (all checked while decoding, before any cryptography)
-----------------------------------------------------------
* :data:`MAX_CIPHERTEXT_LENGTH` = 256 KiB of AES ciphertext per message, hence a
  :data:`MAX_SIGNAL_MESSAGE_LENGTH` and :data:`MAX_PREKEY_MESSAGE_LENGTH` for whole messages;
* counters, previous counters, ids and the registration id are unsigned 32-bit values;
* the ciphertext is a non-empty whole number of AES blocks;
* every public key (ratchet, base and identity key) is the canonical encoding of its ``u``
  coordinate: top bit clear and below ``p``.  X25519 would accept the others as aliases of
  canonical keys, and a second spelling of a base key would otherwise pass for a new session.

Every decoding failure raises :class:`~e2e.errors.DecodeError` with a reason; a message of
another version names the version it carries.

What this module does not know
------------------------------
Keys' meaning or any session state: :mod:`e2e.ratchet` decides which MAC key to check with, and
the caller decides what a type-3 message's ids refer to.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Final, NamedTuple

from e2e import protobuf
from e2e.errors import DecodeError, InvalidMessageError
from e2e.kem import KemCiphertext
from e2e.keys import KEY_LENGTH, PublicKey
from e2e.kyber import KyberCiphertext
from e2e.primitives import AES_BLOCK_SIZE, mac_parts
from e2e.x3dh import InitialMessage

__all__ = [
    "CIPHERTEXT_VERSION",
    "VERSION_BYTE",
    "CIPHERTEXT_VERSION_V4",
    "VERSION_BYTE_V4",
    "MAX_PQ_RATCHET_LENGTH",
    "MAX_ADDRESSES_LENGTH",
    "MAC_LENGTH",
    "MAX_CIPHERTEXT_LENGTH",
    "MAX_SIGNAL_MESSAGE_LENGTH",
    "MAX_PREKEY_MESSAGE_LENGTH",
    "UINT32_MAX",
    "MessageType",
    "SignalMessage",
    "PreKeySignalMessage",
    "encode_signal_message",
    "encode_prekey_signal_message",
]

CIPHERTEXT_VERSION: Final = 3
"""Message version 3: X3DH (or the project's ML-KEM PQXDH) and the Double Ratchet."""

VERSION_BYTE: Final = (CIPHERTEXT_VERSION << 4) | CIPHERTEXT_VERSION
"""``0x33``: message version 3 sent by a peer whose current version is 3."""

CIPHERTEXT_VERSION_V4: Final = 4
"""libsignal's ``CIPHERTEXT_MESSAGE_CURRENT_VERSION``: Kyber PQXDH, with SPQR in field 5."""

VERSION_BYTE_V4: Final = (CIPHERTEXT_VERSION_V4 << 4) | CIPHERTEXT_VERSION_V4
"""``0x44``: message version 4 sent by a peer whose current version is 4."""

MAX_PQ_RATCHET_LENGTH: Final = 1024
"""The longest field 5 (``pq_ratchet``) read.  SPQR's messages are a header and one chunk of an
erasure-coded value, a few dozen bytes; the bound keeps a hostile message from making the
post-quantum ratchet parse a large buffer."""

MAX_ADDRESSES_LENGTH: Final = 64
"""The longest field 6 (``addresses``) read; libsignal writes 36 bytes."""

MAC_LENGTH: Final = 8
"""libsignal truncates the SignalMessage's HMAC-SHA256 to its first 8 bytes."""

MAX_CIPHERTEXT_LENGTH: Final = 256 * 1024
"""The largest AES ciphertext a SignalMessage may carry (256 KiB); longer input is refused unread."""

UINT32_MAX: Final = 0xFFFF_FFFF

_SERIALIZED_KEY_LENGTH: Final = KEY_LENGTH + 1
# Room for the protobuf framing: tags, lengths and four varints of at most 5 bytes each.
_SIGNAL_OVERHEAD: Final = 1 + (2 + _SERIALIZED_KEY_LENGTH) + 2 * (1 + 5) + (1 + 5) + MAC_LENGTH
# Version 4's fields 5 and 6: a tag and a length of at most two bytes each.
_V4_OVERHEAD: Final = (1 + 2 + MAX_PQ_RATCHET_LENGTH) + (1 + 1 + MAX_ADDRESSES_LENGTH)
MAX_SIGNAL_MESSAGE_LENGTH: Final = MAX_CIPHERTEXT_LENGTH + _SIGNAL_OVERHEAD + _V4_OVERHEAD
"""The longest serialized SignalMessage :meth:`SignalMessage.deserialize` reads."""

_SERIALIZED_KEM_CIPHERTEXT_LENGTH: Final = 1 + 1568
MAX_PREKEY_MESSAGE_LENGTH: Final = (
    1
    + 3 * (1 + 5)
    + 2 * (2 + _SERIALIZED_KEY_LENGTH)
    + (1 + 5)
    + MAX_SIGNAL_MESSAGE_LENGTH
    + (1 + 5)
    + (1 + 2 + _SERIALIZED_KEM_CIPHERTEXT_LENGTH)
)
"""The longest serialized PreKeySignalMessage :meth:`PreKeySignalMessage.deserialize` reads."""

_VERSION_PREFIX: Final = bytes((VERSION_BYTE,))
_RATCHET_KEY_TAG: Final = bytes((1 << 3 | protobuf.LEN, _SERIALIZED_KEY_LENGTH))
_COUNTER_TAG: Final = bytes((2 << 3 | protobuf.VARINT,))
_PREVIOUS_COUNTER_TAG: Final = bytes((3 << 3 | protobuf.VARINT,))
_CIPHERTEXT_TAG: Final = bytes((4 << 3 | protobuf.LEN,))

_SIGNAL_SCHEMA: Final = {
    1: protobuf.Field(protobuf.LEN),  # ratchet_key
    2: protobuf.Field(protobuf.VARINT),  # counter
    3: protobuf.Field(protobuf.VARINT),  # previous_counter
    4: protobuf.Field(protobuf.LEN),  # ciphertext
}
_SIGNAL_V4_SCHEMA: Final = {
    **_SIGNAL_SCHEMA,
    5: protobuf.Field(protobuf.LEN),  # pq_ratchet
    6: protobuf.Field(protobuf.LEN),  # addresses
}
_PREKEY_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),  # pre_key_id
    2: protobuf.Field(protobuf.LEN),  # base_key
    3: protobuf.Field(protobuf.LEN),  # identity_key
    4: protobuf.Field(protobuf.LEN),  # message
    5: protobuf.Field(protobuf.VARINT),  # registration_id
    6: protobuf.Field(protobuf.VARINT),  # signed_pre_key_id
    7: protobuf.Field(protobuf.VARINT),  # kem_pre_key_id (libsignal's kyber_pre_key_id)
    8: protobuf.Field(protobuf.LEN),  # kem_ciphertext (libsignal's kyber_ciphertext)
}


class MessageType(enum.IntEnum):
    """libsignal's ``CiphertextMessageType`` values for the two v3 messages."""

    WHISPER = 2
    PREKEY = 3


def _check_version(data: bytes, what: str) -> int:
    """The message version (3 or 4) of ``data``; any other version byte raises DecodeError."""
    if not isinstance(data, bytes):
        raise DecodeError(f"a {what} is bytes, not {type(data).__name__}")
    if not data:
        raise DecodeError(f"an empty {what}")
    if data[0] == VERSION_BYTE:
        return CIPHERTEXT_VERSION
    if data[0] == VERSION_BYTE_V4:
        return CIPHERTEXT_VERSION_V4
    raise DecodeError(
        f"unsupported {what} version {data[0] >> 4} (version byte 0x{data[0]:02x}, sender's "
        f"current version {data[0] & 0x0F}); versions {CIPHERTEXT_VERSION} (0x33) and "
        f"{CIPHERTEXT_VERSION_V4} (0x44) are supported"
    )


_FIELD_PRIME: Final = 2**255 - 19


def _check_canonical(raw: bytes, what: str) -> None:
    """Refuse a ``u`` coordinate that is not the canonical encoding of its value.

    X25519 ignores the top bit of ``u`` and reduces it modulo ``p`` (RFC 7748 §5), so two (for
    ``u < 19`` four) different byte strings act as the same key.  Every honest implementation
    sends the canonical one, and sessions are told apart by the bytes of the base key: a second
    encoding of the same base key would let a recorded first message be accepted once more as a
    new session.
    """
    if raw[31] >= 0x80 or (raw[31] == 0x7F and int.from_bytes(raw, "little") >= _FIELD_PRIME):
        raise DecodeError(f"{what}: not the canonical encoding of a Curve25519 public key")


def _public_key(value: bytes, what: str) -> PublicKey:
    try:
        key = PublicKey.deserialize(value)
    except DecodeError as error:
        raise DecodeError(f"{what}: {error}") from None
    _check_canonical(key.raw, what)
    return key


# The canonical SignalMessage starts 0x33, then field 1 (tag 0x0a, length 33, type byte 0x05).
_CANONICAL_START: Final = _VERSION_PREFIX + _RATCHET_KEY_TAG + b"\x05"
_KEY_END: Final = len(_CANONICAL_START) + KEY_LENGTH


def _read_canonical(data: bytes) -> tuple[bytes, int, int, bytes] | None:
    """Read a SignalMessage laid out as every implementation writes it: fields 1, 2, 3, 4 once each,
    in order, with nothing else.  Returns ``None`` for any other layout, which the general parser
    then judges.  This is only a shortcut: it accepts nothing the general parser would refuse.
    """
    if not data.startswith(_CANONICAL_START) or len(data) < _KEY_END + 6 + MAC_LENGTH:
        return None
    end = len(data) - MAC_LENGTH
    # Fields 2, 3 and 4 follow with their tags 0x10, 0x18, 0x22; each varint (counter, previous
    # counter, ciphertext length) is read inline when it is one byte, as it nearly always is.
    numbers = []
    position = _KEY_END
    for tag in (0x10, 0x18, 0x22):
        if position + 1 >= end or data[position] != tag:
            return None
        value = data[position + 1]
        if value < 0x80:
            position += 2
        else:
            value, position = protobuf.decode_varint(data, position + 1, end)
        numbers.append(value)
    counter, previous_counter, length = numbers
    if position + length != end:
        return None
    return data[len(_CANONICAL_START) : _KEY_END], counter, previous_counter, data[position:end]


def encode_signal_message(
    mac_key: bytes,
    associated_data: bytes,
    serialized_ratchet_key: bytes,
    counter: int,
    previous_counter: int,
    ciphertext: bytes,
    *,
    version: int = CIPHERTEXT_VERSION,
    pq_ratchet: bytes = b"",
    addresses: bytes | None = None,
) -> bytes:
    """The bytes of a SignalMessage, MAC included, without building any object.

    ``associated_data`` is ``Encode(IK_sender) ‖ Encode(IK_receiver)``; ``serialized_ratchet_key``
    is the sender's ratchet key as ``0x05 ‖ 32``.  This is the ratchet's hot path;
    :meth:`SignalMessage.create` is the same with types.  ``version`` 4 writes ``0x44`` and fields
    5 (``pq_ratchet``, left out when empty, as libsignal does) and 6 (``addresses``, when given),
    after field 4 and under the MAC.
    """
    if version == CIPHERTEXT_VERSION:
        if pq_ratchet or addresses is not None:
            raise ValueError("pq_ratchet and addresses exist in version-4 messages only")
        prefix = _VERSION_PREFIX
    elif version == CIPHERTEXT_VERSION_V4:
        if len(pq_ratchet) > MAX_PQ_RATCHET_LENGTH:
            raise ValueError(f"a pq_ratchet field is at most {MAX_PQ_RATCHET_LENGTH} bytes")
        if addresses is not None and not 0 < len(addresses) <= MAX_ADDRESSES_LENGTH:
            raise ValueError(f"an addresses field is 1 to {MAX_ADDRESSES_LENGTH} bytes")
        prefix = bytes((VERSION_BYTE_V4,))
    else:
        raise ValueError(f"message version {version} is not 3 or 4")
    if len(ciphertext) > MAX_CIPHERTEXT_LENGTH:
        raise ValueError(f"a SignalMessage carries at most {MAX_CIPHERTEXT_LENGTH} bytes of ciphertext")
    if not (0 <= counter <= UINT32_MAX and 0 <= previous_counter <= UINT32_MAX):
        raise ValueError("counters are unsigned 32-bit values")
    header = b"".join(
        (
            prefix,
            _RATCHET_KEY_TAG,
            serialized_ratchet_key,
            _COUNTER_TAG,
            protobuf.encode_varint(counter),
            _PREVIOUS_COUNTER_TAG,
            protobuf.encode_varint(previous_counter),
            _CIPHERTEXT_TAG,
            protobuf.encode_varint(len(ciphertext)),
        )
    )
    if version == CIPHERTEXT_VERSION_V4 and (pq_ratchet or addresses is not None):
        trailer = (protobuf.encode_bytes_field(5, pq_ratchet) if pq_ratchet else b"") + (
            b"" if addresses is None else protobuf.encode_bytes_field(6, addresses)
        )
        body = ciphertext + trailer
        mac = mac_parts(mac_key, associated_data + header, body)
        return b"".join((header, body, mac[:MAC_LENGTH]))
    # The MAC is fed the header and the ciphertext separately, so that a long ciphertext is copied
    # once, into the message itself.
    mac = mac_parts(mac_key, associated_data + header, ciphertext)
    return b"".join((header, ciphertext, mac[:MAC_LENGTH]))


def encode_prekey_signal_message(
    registration_id: int,
    pre_key_id: int | None,
    signed_pre_key_id: int,
    serialized_base_key: bytes,
    serialized_identity_key: bytes,
    serialized_message: bytes,
    kem_pre_key_id: int | None = None,
    serialized_kem_ciphertext: bytes | None = None,
    *,
    version: int = CIPHERTEXT_VERSION,
) -> bytes:
    """The bytes of a PreKeySignalMessage around an already encoded SignalMessage.

    ``kem_pre_key_id`` and ``serialized_kem_ciphertext`` (``0x0A ‖ c``, or ``0x08 ‖ c`` for
    version 4) are PQXDH's fields 7 and 8, given together or not at all; version 4 needs them.
    """
    if (kem_pre_key_id is None) != (serialized_kem_ciphertext is None):
        raise ValueError("a KEM ciphertext goes with the id of its KEM prekey")
    if version == CIPHERTEXT_VERSION:
        prefix = _VERSION_PREFIX
    elif version == CIPHERTEXT_VERSION_V4:
        if kem_pre_key_id is None:
            raise ValueError("a version-4 PreKeySignalMessage carries a Kyber prekey id and ciphertext")
        prefix = bytes((VERSION_BYTE_V4,))
    else:
        raise ValueError(f"message version {version} is not 3 or 4")
    for value in (
        registration_id,
        signed_pre_key_id,
        0 if pre_key_id is None else pre_key_id,
        0 if kem_pre_key_id is None else kem_pre_key_id,
    ):
        if not 0 <= value <= UINT32_MAX:
            raise ValueError("ids are unsigned 32-bit values")
    kem_fields = b""
    if kem_pre_key_id is not None and serialized_kem_ciphertext is not None:
        kem_fields = protobuf.encode_uint_field(7, kem_pre_key_id) + protobuf.encode_bytes_field(
            8, serialized_kem_ciphertext
        )
    return b"".join(
        (
            prefix,
            b"" if pre_key_id is None else protobuf.encode_uint_field(1, pre_key_id),
            protobuf.encode_bytes_field(2, serialized_base_key),
            protobuf.encode_bytes_field(3, serialized_identity_key),
            protobuf.encode_bytes_field(4, serialized_message),
            protobuf.encode_uint_field(5, registration_id),
            protobuf.encode_uint_field(6, signed_pre_key_id),
            kem_fields,
        )
    )


class SignalMessage(NamedTuple):
    """A decoded (or freshly made) SignalMessage; ``serialized`` holds its exact wire bytes.

    Immutable.  It is a named tuple rather than a frozen dataclass because one is built for every
    message received, and a frozen dataclass's constructor costs several times as much.
    """

    ratchet_key: PublicKey
    counter: int
    previous_counter: int
    ciphertext: bytes
    serialized: bytes
    version: int = CIPHERTEXT_VERSION
    pq_ratchet: bytes = b""
    """Field 5 of a version-4 message: SPQR's message, opaque here; empty when absent."""
    addresses: bytes | None = None
    """Field 6 of a version-4 message, opaque here; ``None`` when absent."""

    @classmethod
    def create(
        cls,
        mac_key: bytes,
        sender_identity_key: PublicKey,
        receiver_identity_key: PublicKey,
        ratchet_key: PublicKey,
        counter: int,
        previous_counter: int,
        ciphertext: bytes,
        *,
        version: int = CIPHERTEXT_VERSION,
        pq_ratchet: bytes = b"",
        addresses: bytes | None = None,
    ) -> SignalMessage:
        """Encode and MAC a SignalMessage (the MAC covers both identity keys, see the module doc)."""
        serialized = encode_signal_message(
            mac_key,
            sender_identity_key.serialize() + receiver_identity_key.serialize(),
            ratchet_key.serialize(),
            counter,
            previous_counter,
            ciphertext,
            version=version,
            pq_ratchet=pq_ratchet,
            addresses=addresses,
        )
        return cls(
            ratchet_key, counter, previous_counter, ciphertext, serialized, version, pq_ratchet, addresses
        )

    @classmethod
    def deserialize(cls, data: bytes) -> SignalMessage:
        """Decode strictly; anything malformed, oversized or of another version raises DecodeError."""
        version = _check_version(data, "SignalMessage")
        if len(data) > MAX_SIGNAL_MESSAGE_LENGTH:
            raise DecodeError(f"a SignalMessage is at most {MAX_SIGNAL_MESSAGE_LENGTH} bytes")
        if len(data) <= 1 + MAC_LENGTH:
            raise DecodeError("a SignalMessage too short to hold a MAC")
        if version == CIPHERTEXT_VERSION_V4:
            return cls._deserialize_v4(data)
        fast = _read_canonical(data)
        if fast is not None:
            raw_key, counter, previous_counter, ciphertext = fast
            _check_canonical(raw_key, "ratchet key")
            ratchet_key = PublicKey(raw_key)
        else:
            fields = protobuf.parse(data[1:-MAC_LENGTH], _SIGNAL_SCHEMA)
            ratchet_key = _public_key(protobuf.get_bytes(fields, 1, "ratchet key"), "ratchet key")
            counter = protobuf.get_uint(fields, 2, "counter", UINT32_MAX)
            previous_counter = protobuf.get_uint(fields, 3, "previous counter", UINT32_MAX)
            ciphertext = protobuf.get_bytes(fields, 4, "ciphertext")
        if counter > UINT32_MAX:
            raise DecodeError("counter out of range")
        if previous_counter > UINT32_MAX:
            raise DecodeError("previous counter out of range")
        if not ciphertext or len(ciphertext) % AES_BLOCK_SIZE:
            raise DecodeError("the ciphertext is not a whole number of AES blocks")
        return cls(ratchet_key, counter, previous_counter, ciphertext, data)

    @classmethod
    def _deserialize_v4(cls, data: bytes) -> SignalMessage:
        fields = protobuf.parse(data[1:-MAC_LENGTH], _SIGNAL_V4_SCHEMA)
        ratchet_key = _public_key(protobuf.get_bytes(fields, 1, "ratchet key"), "ratchet key")
        counter = protobuf.get_uint(fields, 2, "counter", UINT32_MAX)
        previous_counter = protobuf.get_uint(fields, 3, "previous counter", UINT32_MAX)
        ciphertext = protobuf.get_bytes(fields, 4, "ciphertext")
        if not ciphertext or len(ciphertext) % AES_BLOCK_SIZE:
            raise DecodeError("the ciphertext is not a whole number of AES blocks")
        pq_ratchet = b""
        if 5 in fields:
            pq_ratchet = protobuf.get_bytes(fields, 5, "pq_ratchet")
            if len(pq_ratchet) > MAX_PQ_RATCHET_LENGTH:
                raise DecodeError(f"a pq_ratchet field is at most {MAX_PQ_RATCHET_LENGTH} bytes")
        addresses = None
        if 6 in fields:
            addresses = protobuf.get_bytes(fields, 6, "addresses")
            if len(addresses) > MAX_ADDRESSES_LENGTH:
                raise DecodeError(f"an addresses field is at most {MAX_ADDRESSES_LENGTH} bytes")
        return cls(
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            data,
            CIPHERTEXT_VERSION_V4,
            pq_ratchet,
            addresses,
        )

    def verify_mac(
        self, mac_key: bytes, sender_identity_key: PublicKey, receiver_identity_key: PublicKey
    ) -> None:
        """Check the truncated MAC in constant time; raises :class:`InvalidMessageError`."""
        self.verify_mac_with(mac_key, sender_identity_key.serialize() + receiver_identity_key.serialize())

    def verify_mac_with(self, mac_key: bytes, associated_data: bytes) -> None:
        """:meth:`verify_mac` given ``Encode(IK_sender) ‖ Encode(IK_receiver)`` ready-made."""
        serialized = self.serialized
        expected = mac_parts(mac_key, associated_data, memoryview(serialized)[:-MAC_LENGTH])
        if not hmac.compare_digest(expected[:MAC_LENGTH], serialized[-MAC_LENGTH:]):
            raise InvalidMessageError("bad MAC")

    def __repr__(self) -> str:
        return (
            f"SignalMessage(version={self.version}, ratchet_key={self.ratchet_key.fingerprint()}, "
            f"counter={self.counter}, previous_counter={self.previous_counter}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>"
            + ("" if not self.pq_ratchet else f", pq_ratchet=<{len(self.pq_ratchet)} bytes>")
            + ")"
        )


@dataclass(frozen=True, slots=True)
class PreKeySignalMessage:
    """A decoded (or freshly made) PreKeySignalMessage; ``serialized`` holds its exact wire bytes.

    ``kem_pre_key_id`` and ``kem_ciphertext`` are set exactly when PQXDH started the session: an
    ML-KEM ciphertext in version 3, a Kyber1024 one (always present) in version 4.
    """

    registration_id: int
    pre_key_id: int | None
    signed_pre_key_id: int
    base_key: PublicKey
    identity_key: PublicKey
    message: SignalMessage
    serialized: bytes
    kem_pre_key_id: int | None = None
    kem_ciphertext: KemCiphertext | KyberCiphertext | None = None
    version: int = CIPHERTEXT_VERSION

    @classmethod
    def create(
        cls,
        registration_id: int,
        pre_key_id: int | None,
        signed_pre_key_id: int,
        base_key: PublicKey,
        identity_key: PublicKey,
        message: SignalMessage,
        kem_pre_key_id: int | None = None,
        kem_ciphertext: KemCiphertext | KyberCiphertext | None = None,
    ) -> PreKeySignalMessage:
        """Wrap ``message`` with the X3DH header (Alice's identity and base key, Bob's prekey ids),
        and PQXDH's KEM prekey id and ciphertext when given.  The version is ``message``'s: a
        version-4 message needs a Kyber1024 ciphertext, a version-3 one takes only ML-KEM's.
        """
        version = message.version
        if version == CIPHERTEXT_VERSION_V4 and not isinstance(kem_ciphertext, KyberCiphertext):
            raise ValueError("a version-4 PreKeySignalMessage carries a Kyber1024 ciphertext")
        if version == CIPHERTEXT_VERSION and isinstance(kem_ciphertext, KyberCiphertext):
            raise ValueError("a Kyber1024 ciphertext goes in a version-4 PreKeySignalMessage")
        serialized = encode_prekey_signal_message(
            registration_id,
            pre_key_id,
            signed_pre_key_id,
            base_key.serialize(),
            identity_key.serialize(),
            message.serialized,
            kem_pre_key_id,
            None if kem_ciphertext is None else kem_ciphertext.serialize(),
            version=version,
        )
        return cls(
            registration_id,
            pre_key_id,
            signed_pre_key_id,
            base_key,
            identity_key,
            message,
            serialized,
            kem_pre_key_id,
            kem_ciphertext,
            version,
        )

    @classmethod
    def deserialize(cls, data: bytes) -> PreKeySignalMessage:
        """Decode strictly, inner SignalMessage included; failures raise DecodeError."""
        version = _check_version(data, "PreKeySignalMessage")
        if len(data) > MAX_PREKEY_MESSAGE_LENGTH:
            raise DecodeError(f"a PreKeySignalMessage is at most {MAX_PREKEY_MESSAGE_LENGTH} bytes")
        fields = protobuf.parse(data[1:], _PREKEY_SCHEMA)
        pre_key_id = None
        if 1 in fields:
            pre_key_id = protobuf.get_uint(fields, 1, "one-time prekey id", UINT32_MAX)
        base_key = _public_key(protobuf.get_bytes(fields, 2, "base key"), "base key")
        identity_key = _public_key(protobuf.get_bytes(fields, 3, "identity key"), "identity key")
        message = SignalMessage.deserialize(protobuf.get_bytes(fields, 4, "inner SignalMessage"))
        if message.version != version:
            raise DecodeError(
                f"a version-{version} PreKeySignalMessage wraps a version-{message.version} SignalMessage"
            )
        registration_id = protobuf.get_uint(fields, 5, "registration id", UINT32_MAX)
        signed_pre_key_id = protobuf.get_uint(fields, 6, "signed prekey id", UINT32_MAX)
        if (7 in fields) != (8 in fields):
            raise DecodeError("a KEM prekey id and a KEM ciphertext come together or not at all")
        kem_pre_key_id = None
        kem_ciphertext: KemCiphertext | KyberCiphertext | None = None
        if version == CIPHERTEXT_VERSION_V4 and 7 not in fields:
            raise DecodeError("a version-4 PreKeySignalMessage without a Kyber prekey id and ciphertext")
        if 7 in fields:
            kem_pre_key_id = protobuf.get_uint(fields, 7, "KEM prekey id", UINT32_MAX)
            serialized_ciphertext = protobuf.get_bytes(fields, 8, "KEM ciphertext")
            if version == CIPHERTEXT_VERSION_V4:
                kem_ciphertext = KyberCiphertext.deserialize(serialized_ciphertext)
            else:
                kem_ciphertext = KemCiphertext.deserialize(serialized_ciphertext)
        return cls(
            registration_id,
            pre_key_id,
            signed_pre_key_id,
            base_key,
            identity_key,
            message,
            data,
            kem_pre_key_id,
            kem_ciphertext,
            version,
        )

    def initial_message(self) -> InitialMessage:
        """The key-agreement header as :func:`e2e.x3dh.respond` and :func:`e2e.pqxdh.respond` take it."""
        return InitialMessage(
            identity_key=self.identity_key,
            base_key=self.base_key,
            signed_pre_key_id=self.signed_pre_key_id,
            pre_key_id=self.pre_key_id,
            kem_pre_key_id=self.kem_pre_key_id,
            kem_ciphertext=self.kem_ciphertext,
        )

    def __repr__(self) -> str:
        return (
            f"PreKeySignalMessage(version={self.version}, registration_id={self.registration_id}, "
            f"pre_key_id={self.pre_key_id}, "
            f"signed_pre_key_id={self.signed_pre_key_id}, "
            + ("" if self.kem_pre_key_id is None else f"kem_pre_key_id={self.kem_pre_key_id}, ")
            + f"base_key={self.base_key.fingerprint()}, "
            f"identity_key={self.identity_key.fingerprint()}, message={self.message!r})"
        )
