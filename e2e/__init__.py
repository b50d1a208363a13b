"""The protocol core: X3DH/PQXDH and the Double Ratchet in libsignal's v3 format, sans-I/O.

Each module owns one layer and opens with its theory; ``docs/protocol.md`` walks through them in
the order a conversation uses them.  The names below are the ones a front end needs most often.
"""

from e2e.address import ProtocolAddress
from e2e.errors import (
    DecodeError,
    DistributionMismatchError,
    DowngradeError,
    DuplicateMessageError,
    E2EError,
    FingerprintMismatchError,
    FingerprintVersionMismatchError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    NoSenderKeyError,
    NoSessionError,
    StateFormatError,
    TooManySkippedMessagesError,
    UnknownPreKeyError,
    UntrustedIdentityError,
)
from e2e.explain import Event, Trace, emit
from e2e.fingerprint import DisplayableFingerprint, Fingerprint, ScannableFingerprint
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName, SenderKeyStore
from e2e.kdf import ChainKey, MessageKeys, RootKey
from e2e.kem import KemCiphertext, KemKeyPair, KemPrivateKey, KemPublicKey
from e2e.keys import KeyPair, PrivateKey, PublicKey, Rng
from e2e.kyber import KyberCiphertext, KyberKeyPair, KyberPrivateKey, KyberPublicKey
from e2e.memory_store import InMemoryProtocolStore
from e2e.ratchet import DEFAULT_LIMITS, Limits, RatchetState
from e2e.records import (
    IdentityRecord,
    KemPreKeyRecord,
    PreKeyRecord,
    SignedPreKeyRecord,
    deserialize_identity,
    serialize_identity,
)
from e2e.sender_key_messages import SenderKeyDistributionMessage, SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import SenderKeyRecord
from e2e.session import Ciphertext, SessionRecord
from e2e.session_cipher import SessionBuilder, SessionCipher, make_pre_key_bundle
from e2e.stores import Direction, ProtocolStore
from e2e.wire import (
    CIPHERTEXT_VERSION,
    MAX_CIPHERTEXT_LENGTH,
    MessageType,
    PreKeySignalMessage,
    SignalMessage,
)
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret

__version__ = "0.1.0"
"""The project's version, its one source: pyproject.toml reads it from here, and every program's
``--version`` prints it."""

__all__ = [
    # Keys (e2e.keys) and the KDF chain types (e2e.kdf).
    "PublicKey",
    "PrivateKey",
    "KeyPair",
    "Rng",
    "RootKey",
    "ChainKey",
    "MessageKeys",
    # ML-KEM-1024 keys for PQXDH (e2e.kem); the agreements themselves are e2e.x3dh and e2e.pqxdh.
    "KemPublicKey",
    "KemPrivateKey",
    "KemKeyPair",
    "KemCiphertext",
    # Kyber-1024 keys for Signal's PQXDH, message version 4 (e2e.kyber; the agreement is e2e.pqxdh_v4).
    "KyberPublicKey",
    "KyberPrivateKey",
    "KyberKeyPair",
    "KyberCiphertext",
    # X3DH (e2e.x3dh).
    "PreKeyBundle",
    "InitialMessage",
    "SharedSecret",
    # Messages on the wire (e2e.wire).
    "CIPHERTEXT_VERSION",
    "MAX_CIPHERTEXT_LENGTH",
    "MessageType",
    "SignalMessage",
    "PreKeySignalMessage",
    # Sessions (e2e.session, e2e.ratchet).
    "SessionRecord",
    "Ciphertext",
    "RatchetState",
    "Limits",
    "DEFAULT_LIMITS",
    # Sessions over stores (e2e.address, e2e.stores, e2e.memory_store, e2e.session_cipher).
    "ProtocolAddress",
    "Direction",
    "ProtocolStore",
    "InMemoryProtocolStore",
    "SessionBuilder",
    "SessionCipher",
    "make_pre_key_bundle",
    # Stored records (e2e.records).
    "IdentityRecord",
    "PreKeyRecord",
    "SignedPreKeyRecord",
    "KemPreKeyRecord",
    "serialize_identity",
    "deserialize_identity",
    # Safety numbers (e2e.fingerprint).
    "Fingerprint",
    "DisplayableFingerprint",
    "ScannableFingerprint",
    # Errors (e2e.errors).
    "E2EError",
    "DecodeError",
    "StateFormatError",
    "InvalidKeyError",
    "InvalidSignatureError",
    "InvalidMessageError",
    "DuplicateMessageError",
    "TooManySkippedMessagesError",
    "NoSessionError",
    "UnknownPreKeyError",
    "UntrustedIdentityError",
    "FingerprintMismatchError",
    "FingerprintVersionMismatchError",
    "DowngradeError",
    # Group messages with Sender Keys (e2e.group_cipher, e2e.sender_key_messages, e2e.sender_key_state).
    "GroupCipher",
    "SenderKeyName",
    "SenderKeyStore",
    "InMemorySenderKeyStore",
    "SenderKeyFraming",
    "SenderKeyMessage",
    "SenderKeyDistributionMessage",
    "SenderKeyRecord",
    "NoSenderKeyError",
    "DistributionMismatchError",
    # Explain mode (e2e.explain; its fingerprint() stays there, the name e2e.fingerprint being the
    # safety-number module).
    "Event",
    "Trace",
    "emit",
]
