"""One Double Ratchet session state, as libsignal's v3 and v4 protocols run it.

What this module owns
---------------------
:class:`RatchetState`: the state variables of Signal's Double Ratchet specification (revision 1,
§3.2) for one session with one remote device, and the operations on them:

=====================  ==============================================================
spec                   here
=====================  ==============================================================
``DHs``                ``sending_ratchet_key`` (public) and its private key
``DHr``                the ratchet key of the newest receiver chain
``RK``                 ``root_key``
``CKs``, ``Ns``        ``sending_chain_key``, ``sending_index``
``CKr``, ``Nr``        one :class:`ReceiverChain` per remote ratchet key (key, index)
``PN``                 ``previous_counter``
(pending ``DHRatchet``) ``sending_chain_pending``: the sending half is due at the next send
``MKSKIPPED``          ``skipped``: ``(DHr, N) → mk``, oldest first
=====================  ==============================================================

As libsignal does, and unlike the specification's single ``CKr``, the state keeps the receiver
chains of the last :attr:`Limits.max_receiver_chains` remote ratchet keys.  A late message on an
older chain is then decrypted by advancing that chain, so ``PN`` is only informational: we write it
as libsignal does (the last index used on the previous sending chain) and never read it.  The
stored skipped keys are the specification's ``mk`` (the seed ``HMAC(CK, 0x01)``); the 80 bytes of
AES key, MAC key and IV are derived from it when the message arrives (libsignal v3's expansion).

Initialization (libsignal's ``RatchetingSession``; specification §3.3 with X3DH's ``SK``)
-----------------------------------------------------------------------------------------
* Alice draws her first ratchet key ``DHs``, sets ``RK, CKs = KDF_RK(SK.root, DH(DHs, SPK_B))``
  and records X3DH's chain key as the receiving chain of ``SPK_B``: Bob's signed prekey is his
  first ratchet key.
* Bob's first ``DHs`` *is* his signed prekey, with X3DH's chain key as ``CKs`` and its root key
  as ``RK``.

Encryption (§3.4, §5.2 of the specification with libsignal v3's constants)
--------------------------------------------------------------------------
``mk, CKs = KDF_CK(CKs)``; ``cipher key ‖ MAC key ‖ IV = HKDF(0, mk, "WhisperMessageKeys", 80)``;
the plaintext is AES-256-CBC/PKCS#7 encrypted and framed as a :class:`~e2e.wire.SignalMessage`.

Decryption, and the no-partial-state invariant
----------------------------------------------
:meth:`RatchetState.decrypt` first computes everything a message would change as local values:
the receiving chain (an existing one advanced, or a new one from a DH ratchet step), the skipped
message keys on the way, the new root key.  It checks the MAC (in constant time) and decrypts, and
only then writes those values into the state.  Nothing is copied per message and any exception
leaves the state exactly as it was.  A forged message costs at most one Diffie-Hellman and never
draws randomness.

The DH ratchet step, split at the next send
-------------------------------------------
The specification's ``DHRatchet`` (§3.5), and libsignal, do both halves of a step when a message
with a new remote ratchet key arrives: the receiving half ``RK, CKr = KDF_RK(RK, DH(DHs, DHr))``
and, at once, the sending half: a fresh ``DHs`` and ``RK, CKs = KDF_RK(RK, DH(DHs, DHr))``.  Here
(as Olm and vodozemac do) :meth:`RatchetState.decrypt` does the receiving half only and marks the
sending half as due (``sending_chain_pending``); the next :meth:`RatchetState.encrypt` draws the
fresh ``DHs``, does the sending half from the ``RK`` and ``DHr`` it left, sets ``PN`` and starts
``CKs`` at 0.  A receive that is not followed by a send then costs no key generation and one DH
instead of two, and so does every session setup on Bob's side.

Why this is the same protocol:

* *On the wire*: the first message after the step carries the fresh ``DHs`` and a ``CKs`` derived
  by the same two ``KDF_RK`` from the same inputs in the same order; the peer cannot tell the two
  designs apart, and interoperates with libsignal both ways.
* *Post-compromise security* is not weakened: in both designs the fresh ratchet key is generated
  before the first message that uses it, and no message is ever sent under the previous sending
  chain once a new remote key has been received.  An attacker who reads the state between the
  receive and the next send learns, in the eager design, the fresh private key stored in it and
  so the next sending chain; here that key does not exist yet, so the state alone (without the
  randomness) does not give the next sending chain.  Healing otherwise happens as before, once
  the peer has answered a key generated after the compromise.
* *Forward secrecy* is unchanged: the old sending chain key is never used again (encrypt starts
  the new chain while the step is due).  The previous ``DHs`` private key is kept until the next
  send instead of being replaced at once; what it opens (the receiving chain of the newest remote
  key) is in the state anyway, as ``CKr``, in both designs.
* Until we send, the peer knows only our previous ``DHs``; a further new remote ratchet key in
  that interval is therefore answered with that key, which is what the peer computed with.
* Randomness is drawn by :meth:`RatchetState.encrypt` instead of :meth:`RatchetState.decrypt`.
  Each side still draws its ratchet keys in the same order, so seeded conversations give the
  same bytes as before (the published conversation vectors did not change).  A copy of a state
  whose sending half is due draws a fresh key of its own when it encrypts, where a copy of an
  eager state would repeat the stored key and with it the message keys of the copied chain.

Explain events: the receiving half's ``ratchet.dh_step`` (``direction: receiving``) is emitted by
the decrypt that received the new key, the sending half's (``direction: sending``) by the encrypt
that uses the fresh key, so each side's trace shows the step with the message it belongs to.

Limits (:class:`Limits`)
------------------------
``max_skip`` bounds how far one message may jump ahead in its chain (the specification's
``MAX_SKIP``); ``max_stored_skipped_keys`` bounds ``MKSKIPPED`` across all chains, evicting the
oldest; ``max_receiver_chains`` bounds the receiver chains (oldest dropped, its skipped keys stay
until evicted); ``max_archived_states`` is used by :class:`e2e.session.SessionRecord`.

``max_skip`` is also the bound on the work a forged message can cost before its MAC fails: the
chain must be advanced to the message's counter to derive the key that checks it, one
``KDF_CK`` per skipped message (about 5 µs each here, so ~0.1 s at the default of 25 000, as in
libsignal), and a record tries each of its states.  Only the newest
``max_stored_skipped_keys`` of the skipped keys are kept while walking, since older ones would
be evicted at once.  Counters are 32-bit: a chain carries messages 0 to :data:`LAST_COUNTER`.

Version 4: the Triple Ratchet's seam
------------------------------------
A state started by Signal's PQXDH (:mod:`e2e.pqxdh_v4`) has ``session_version`` 4: it writes and
reads version-4 messages only (``0x44``; a message of the other version raises
:class:`~e2e.errors.VersionMismatchError`), and it may hold a post-quantum ratchet
(:class:`~e2e.pq_ratchet.PostQuantumRatchet`, ``pq_ratchet``).  Root and chain keys evolve exactly
as in version 3; every message key is ``HKDF(salt = SPQR's key, seed, "WhisperMessageKeys", 80)``
(:func:`e2e.kdf.derive_message_keys`) with the SPQR bytes in field 5, and on receipt SPQR runs on
a copy that replaces the state only once the MAC has verified.  Without a post-quantum ratchet
field 5 stays empty and the salt is HKDF's default, and a received non-empty field 5 is refused.

What this module does not know
------------------------------
Prekeys, X3DH, several states for one peer, or storage: :mod:`e2e.session` builds states from
X3DH's output and keeps several; this module only knows one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from e2e import protobuf
from e2e.errors import (
    DecodeError,
    DuplicateMessageError,
    E2EError,
    InvalidKeyError,
    InvalidMessageError,
    StateFormatError,
    TooManySkippedMessagesError,
    VersionMismatchError,
)
from e2e.explain import Trace, emit
from e2e.kdf import derive_message_keys as derive_salted_message_keys
from e2e.kem import KemCiphertext
from e2e.keys import KEY_LENGTH, KeyPair, PrivateKey, PublicKey, Rng
from e2e.kyber import KyberCiphertext
from e2e.pq_ratchet import (
    Direction,
    ExplainedPostQuantumRatchet,
    PostQuantumRatchet,
    PostQuantumRatchetFactory,
)
from e2e.primitives import cbc_decrypt, cbc_encrypt, chain_step, derive_message_keys, root_step
from e2e.wire import (
    CIPHERTEXT_VERSION,
    CIPHERTEXT_VERSION_V4,
    MAX_CIPHERTEXT_LENGTH,
    UINT32_MAX,
    SignalMessage,
    encode_signal_message,
)
from e2e.x3dh import SharedSecret

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "ReceiverChain",
    "PendingPreKey",
    "Agreement",
    "RatchetState",
    "MAX_PLAINTEXT_LENGTH",
    "LAST_COUNTER",
]

LAST_COUNTER: Final = UINT32_MAX - 1
"""The last message number of a chain: counters are 32-bit, and so is the chain index after it."""

MAX_PLAINTEXT_LENGTH: Final = MAX_CIPHERTEXT_LENGTH - 1
"""The longest plaintext one message carries: PKCS#7 always adds at least one byte."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a session keeps and accepts (see the module docstring)."""

    max_skip: int = 25_000
    """The specification's ``MAX_SKIP``: how many message keys one message may make us skip."""
    max_stored_skipped_keys: int = 2_000
    """Skipped message keys kept across all chains of a state; the oldest are evicted first."""
    max_receiver_chains: int = 5
    """Receiver chains kept per state (libsignal keeps 5)."""
    max_archived_states: int = 40
    """Archived states kept per session record (libsignal keeps 40)."""

    def __post_init__(self) -> None:
        for name in ("max_skip", "max_stored_skipped_keys", "max_receiver_chains", "max_archived_states"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Limits.{name} must be a non-negative integer")
        if self.max_receiver_chains < 1:
            raise ValueError("Limits.max_receiver_chains must be at least 1")


class ReceiverChain:
    """A receiving chain: the remote ratchet key ``DHr`` it belongs to, ``CKr`` and ``Nr``."""

    __slots__ = ("ratchet_key", "chain_key", "index")

    def __init__(self, ratchet_key: PublicKey, chain_key: bytes, index: int) -> None:
        self.ratchet_key = ratchet_key
        self.chain_key = chain_key
        self.index = index

    def __repr__(self) -> str:
        return (
            f"ReceiverChain(ratchet_key={self.ratchet_key.fingerprint()}, index={self.index}, key=<redacted>)"
        )


@dataclass(frozen=True, slots=True)
class PendingPreKey:
    """What Alice repeats in every message until she hears back: the X3DH header's ids and base key,
    and for a PQXDH session the KEM prekey id and the KEM ciphertext (PQXDH §3.3).
    """

    pre_key_id: int | None
    signed_pre_key_id: int
    base_key: PublicKey
    kem_pre_key_id: int | None = None
    kem_ciphertext: KemCiphertext | KyberCiphertext | None = None

    def __post_init__(self) -> None:
        if (self.kem_pre_key_id is None) != (self.kem_ciphertext is None):
            raise InvalidKeyError("a pending KEM ciphertext needs the id of its KEM prekey")


Agreement = Literal["x3dh", "pqxdh", "pqxdh_v4"]
"""The key agreement that started a state: X3DH, the project's ML-KEM PQXDH (:mod:`e2e.pqxdh`), or
Signal's Kyber PQXDH of message version 4 (:mod:`e2e.pqxdh_v4`)."""

# How field 16 of a stored state names the agreement; X3DH states leave the field out.
_AGREEMENT_CODES: Final[dict[int, Agreement]] = {1: "x3dh", 2: "pqxdh", 3: "pqxdh_v4"}
_AGREEMENT_NUMBERS: Final[dict[Agreement, int]] = {"x3dh": 1, "pqxdh": 2, "pqxdh_v4": 3}


DEFAULT_LIMITS: Final = Limits()
"""The limits used when none are given."""

_STATE_SCHEMA: Final = {
    number: protobuf.Field(protobuf.VARINT if number in (1, 8, 9, 13, 14, 16, 17) else protobuf.LEN)
    for number in range(1, 19)
}
# Field 18 (session format version 4): the post-quantum ratchet's own serialized state.
# Field 17 (session format version 3): the sending half of a DH ratchet step is due.
_PENDING_SENDING_CHAIN: Final = protobuf.encode_uint_field(17, 1)
_PENDING_SCHEMA: Final = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.VARINT),
    3: protobuf.Field(protobuf.LEN),
    4: protobuf.Field(protobuf.VARINT),
    5: protobuf.Field(protobuf.LEN),
}
# A receiver chain is packed as ratchet key (32) ‖ chain key (32) ‖ index (4, big-endian); a
# skipped key as ratchet key (32) ‖ counter (4, big-endian) ‖ mk (32).
_PACKED_ENTRY: Final = 68


class RatchetState:
    """The Double Ratchet state of one session (specification §3.2), as libsignal's ``SessionState``.

    Build one with :meth:`initialize_alice` or :meth:`initialize_bob`; use :meth:`encrypt` and
    :meth:`decrypt`; store it with :meth:`serialize`.  ``repr`` shows no secret.
    """

    __slots__ = (
        "limits",
        "session_version",
        "local_identity_key",
        "remote_identity_key",
        "root_key",
        "sending_ratchet_key",
        "_sending_ratchet_private",
        "sending_chain_key",
        "sending_index",
        "previous_counter",
        "receiver_chains",
        "skipped",
        "pending_prekey",
        "local_registration_id",
        "remote_registration_id",
        "base_key",
        "agreement",
        "sending_chain_pending",
        "pq_ratchet",
        "_associated_out",
        "_associated_in",
        "_serialized_sending_key",
        "_serialized_static",
    )

    def __init__(
        self,
        *,
        local_identity_key: PublicKey,
        remote_identity_key: PublicKey,
        root_key: bytes,
        sending_ratchet_key: PublicKey,
        sending_ratchet_private: PrivateKey,
        sending_chain_key: bytes,
        sending_index: int,
        previous_counter: int,
        receiver_chains: list[ReceiverChain],
        skipped: dict[tuple[bytes, int], bytes],
        pending_prekey: PendingPreKey | None,
        local_registration_id: int,
        remote_registration_id: int,
        base_key: PublicKey,
        limits: Limits,
        agreement: Agreement = "x3dh",
        sending_chain_pending: bool = False,
        session_version: int = CIPHERTEXT_VERSION,
        pq_ratchet: PostQuantumRatchet | None = None,
    ) -> None:
        if session_version not in (CIPHERTEXT_VERSION, CIPHERTEXT_VERSION_V4):
            raise ValueError(f"session version {session_version} is not 3 or 4")
        if (session_version == CIPHERTEXT_VERSION_V4) != (agreement == "pqxdh_v4"):
            raise ValueError("version-4 sessions are exactly those started by Signal's PQXDH")
        if pq_ratchet is not None and session_version != CIPHERTEXT_VERSION_V4:
            raise ValueError("a post-quantum ratchet runs in version-4 sessions only")
        self.limits = limits
        self.session_version = session_version
        self.pq_ratchet = pq_ratchet
        self.local_identity_key = local_identity_key
        self.remote_identity_key = remote_identity_key
        self.root_key = root_key
        self.sending_ratchet_key = sending_ratchet_key
        self._sending_ratchet_private = sending_ratchet_private
        self.sending_chain_key = sending_chain_key
        self.sending_index = sending_index
        self.previous_counter = previous_counter
        self.receiver_chains = receiver_chains
        self.skipped = skipped
        self.pending_prekey = pending_prekey
        self.local_registration_id = local_registration_id
        self.remote_registration_id = remote_registration_id
        self.base_key = base_key
        self.agreement: Agreement = agreement
        # Whether the sending half of a DH ratchet step is due at the next encrypt (the module
        # docstring); the sending chain fields then belong to the chain that will not be used again.
        self.sending_chain_pending = sending_chain_pending
        # The MAC's associated data in each direction, Encode(IK_sender) ‖ Encode(IK_receiver).
        self._associated_out = local_identity_key.serialize() + remote_identity_key.serialize()
        self._associated_in = remote_identity_key.serialize() + local_identity_key.serialize()
        self._serialized_sending_key = sending_ratchet_key.serialize()
        self._serialized_static: tuple[bytes, bytes] | None = None

    # -- initialization -------------------------------------------------------------------------

    @classmethod
    def initialize_alice(
        cls,
        secret: SharedSecret,
        our_identity_key: PublicKey,
        their_identity_key: PublicKey,
        their_signed_pre_key: PublicKey,
        our_base_key: PublicKey,
        pending_prekey: PendingPreKey,
        local_registration_id: int,
        remote_registration_id: int,
        rng: Rng,
        limits: Limits = DEFAULT_LIMITS,
        trace: Trace | None = None,
        *,
        agreement: Agreement = "x3dh",
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> RatchetState:
        """Alice after X3DH or PQXDH (libsignal ``initializeAliceSession``): see the module docstring.

        With ``agreement="pqxdh_v4"`` the state is version 4, and ``pq_ratchet_factory`` (if given)
        starts its post-quantum ratchet from ``secret.pq_ratchet_key`` in direction ``A2B``.
        """
        version, pq_ratchet = _version_and_pq_ratchet(agreement, secret, pq_ratchet_factory, Direction.A2B)
        sending = KeyPair.generate(rng)
        dh_out = sending.agree(their_signed_pre_key)
        root_key, sending_chain_key = root_step(secret.root_key.key, dh_out)
        if trace is not None:
            emit(
                trace,
                "ratchet.init",
                {
                    "role": "alice",
                    "our_ratchet_key": sending.public_key.fingerprint(),
                    "their_ratchet_key": their_signed_pre_key.fingerprint(),
                },
                {
                    "dh": dh_out,
                    "root_key": root_key,
                    "sending_chain_key": sending_chain_key,
                    "receiving_chain_key": secret.chain_key.key,
                },
            )
        return cls(
            local_identity_key=our_identity_key,
            remote_identity_key=their_identity_key,
            root_key=root_key,
            sending_ratchet_key=sending.public_key,
            sending_ratchet_private=sending.private_key,
            sending_chain_key=sending_chain_key,
            sending_index=0,
            previous_counter=0,
            receiver_chains=[ReceiverChain(their_signed_pre_key, secret.chain_key.key, 0)],
            skipped={},
            pending_prekey=pending_prekey,
            local_registration_id=local_registration_id,
            remote_registration_id=remote_registration_id,
            base_key=our_base_key,
            limits=limits,
            agreement=agreement,
            session_version=version,
            pq_ratchet=pq_ratchet,
        )

    @classmethod
    def initialize_bob(
        cls,
        secret: SharedSecret,
        our_identity_key: PublicKey,
        their_identity_key: PublicKey,
        our_signed_pre_key: KeyPair,
        their_base_key: PublicKey,
        local_registration_id: int,
        remote_registration_id: int,
        limits: Limits = DEFAULT_LIMITS,
        trace: Trace | None = None,
        *,
        agreement: Agreement = "x3dh",
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> RatchetState:
        """Bob after X3DH or PQXDH (libsignal ``initializeBobSession``): his signed prekey is his
        first ``DHs``.  Version 4 as in :meth:`initialize_alice`, direction ``B2A``.
        """
        version, pq_ratchet = _version_and_pq_ratchet(agreement, secret, pq_ratchet_factory, Direction.B2A)
        if trace is not None:
            emit(
                trace,
                "ratchet.init",
                {"role": "bob", "our_ratchet_key": our_signed_pre_key.public_key.fingerprint()},
                {"root_key": secret.root_key.key, "sending_chain_key": secret.chain_key.key},
            )
        return cls(
            local_identity_key=our_identity_key,
            remote_identity_key=their_identity_key,
            root_key=secret.root_key.key,
            sending_ratchet_key=our_signed_pre_key.public_key,
            sending_ratchet_private=our_signed_pre_key.private_key,
            sending_chain_key=secret.chain_key.key,
            sending_index=0,
            previous_counter=0,
            receiver_chains=[],
            skipped={},
            pending_prekey=None,
            local_registration_id=local_registration_id,
            remote_registration_id=remote_registration_id,
            base_key=their_base_key,
            limits=limits,
            agreement=agreement,
            session_version=version,
            pq_ratchet=pq_ratchet,
        )

    # -- the ratchet ----------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, rng: Rng, trace: Trace | None = None) -> bytes:
        """Encrypt one message on the sending chain (§3.4); returns the SignalMessage's bytes.

        ``rng`` is used only when the sending half of a DH ratchet step is due (module docstring).
        """
        if not isinstance(plaintext, bytes):
            raise TypeError("the plaintext must be bytes")
        if len(plaintext) > MAX_PLAINTEXT_LENGTH:
            raise ValueError(f"a message carries at most {MAX_PLAINTEXT_LENGTH} bytes of plaintext")
        pending = self.sending_chain_pending
        if pending:
            # The sending half of DHRatchet (§3.5): a fresh DHs, then KDF_RK with the newest DHr.
            their_key = self.receiver_chains[-1].ratchet_key
            new_sending = KeyPair.generate(rng)
            dh_out = new_sending.agree(their_key)
            root_key, chain_key = root_step(self.root_key, dh_out)
            previous_counter = max(self.sending_index - 1, 0)
            sending_public = new_sending.public_key
            sending_key = sending_public.serialize()
            index = 0
            if trace is not None:
                emit(
                    trace,
                    "ratchet.dh_step",
                    {
                        "direction": "sending",
                        "our_ratchet_key": new_sending.public_key.fingerprint(),
                        "their_ratchet_key": their_key.fingerprint(),
                        "previous_counter": previous_counter,
                    },
                    {"dh": dh_out, "root_key": root_key, "chain_key": chain_key},
                )
        else:
            chain_key = self.sending_chain_key
            index = self.sending_index
            previous_counter = self.previous_counter
            sending_public = self.sending_ratchet_key
            sending_key = self._serialized_sending_key
            if index >= LAST_COUNTER + 1:
                raise InvalidMessageError("the sending chain is exhausted (2**32 - 1 messages)")
        seed, next_chain_key = chain_step(chain_key)
        if self.session_version == CIPHERTEXT_VERSION:
            keys = derive_message_keys(seed)
            ciphertext = cbc_encrypt(keys[:32], keys[64:], plaintext)
            serialized = encode_signal_message(
                keys[32:64], self._associated_out, sending_key, index, previous_counter, ciphertext
            )
        else:
            # The Triple Ratchet (module docstring): SPQR's key salts the message keys.
            pq_message, pq_key = b"", None
            epoch_before = _pq_epoch(self.pq_ratchet) if trace is not None else None
            if self.pq_ratchet is not None:
                pq_message, pq_key = self.pq_ratchet.send(rng)
            keys = derive_salted_message_keys(seed, pq_key)
            ciphertext = cbc_encrypt(keys[:32], keys[64:], plaintext)
            serialized = encode_signal_message(
                keys[32:64],
                self._associated_out,
                sending_key,
                index,
                previous_counter,
                ciphertext,
                version=CIPHERTEXT_VERSION_V4,
                pq_ratchet=pq_message,
            )
            if trace is not None:
                _emit_pq_step(trace, self.pq_ratchet, "encrypt", index, pq_message, pq_key, epoch_before)
        if trace is not None:
            emit(
                trace,
                "ratchet.chain_step",
                {"chain": "sending", "index": index, "ratchet_key": sending_public.fingerprint()},
                {"chain_key": chain_key, "next_chain_key": next_chain_key},
            )
            emit(
                trace,
                "ratchet.message_key",
                {"direction": "encrypt", "counter": index},
                {"message_keys": keys},
            )
        if pending:
            self.root_key = root_key
            self.previous_counter = previous_counter
            self.sending_ratchet_key = sending_public
            self._sending_ratchet_private = new_sending.private_key
            self._serialized_sending_key = sending_key
            self.sending_chain_pending = False
        self.sending_chain_key = next_chain_key
        self.sending_index = index + 1
        return serialized

    def has_receiver_chain(self, ratchet_key: PublicKey) -> bool:
        """Whether this state has a receiving chain for ``ratchet_key``."""
        return self._find_chain(ratchet_key.raw) is not None

    def _find_chain(self, raw: bytes) -> ReceiverChain | None:
        for chain in reversed(self.receiver_chains):
            if chain.ratchet_key.raw == raw:
                return chain
        return None

    def decrypt(self, message: SignalMessage, rng: Rng | None = None, trace: Trace | None = None) -> bytes:
        """Decrypt ``message`` and advance the state; on any error the state is unchanged.

        Raises :class:`~e2e.errors.DuplicateMessageError` for a message whose key was used or
        dropped, :class:`~e2e.errors.TooManySkippedMessagesError` beyond ``max_skip``, and
        :class:`~e2e.errors.InvalidMessageError` for a bad MAC, padding or ratchet key.
        ``rng`` is not used: a DH step's fresh ratchet key is drawn by the next :meth:`encrypt`
        (it is still accepted, and may be left out).
        """
        their_key = message.ratchet_key
        raw = their_key.raw
        counter = message.counter
        if message.version != self.session_version:
            raise VersionMismatchError(
                f"a version-{message.version} message for a version-{self.session_version} session"
            )
        if counter > LAST_COUNTER:
            raise InvalidMessageError(f"counter {counter} is beyond the last one a chain carries")
        skipped_seed = self.skipped.get((raw, counter))
        if skipped_seed is not None:
            pq_trial, pq_key = self._pq_receive(message, trace)
            plaintext = self._open(message, skipped_seed, trace, pq_key)
            del self.skipped[(raw, counter)]
            if pq_trial is not None:
                self.pq_ratchet = pq_trial
            if trace is not None:
                emit(
                    trace,
                    "ratchet.skipped_key_used",
                    {"ratchet_key": their_key.fingerprint(), "counter": counter},
                )
            self.pending_prekey = None
            return plaintext

        chain = self._find_chain(raw)
        new_root_key: bytes | None = None
        if chain is not None:
            if counter < chain.index:
                raise DuplicateMessageError(
                    f"message {counter} on this chain was already received (or its key was dropped)"
                )
            if counter - chain.index > self.limits.max_skip:
                raise TooManySkippedMessagesError(
                    f"message {counter} would skip {counter - chain.index} keys "
                    f"(limit {self.limits.max_skip})"
                )
            chain_key = chain.chain_key
            index = chain.index
        else:
            if counter > self.limits.max_skip:
                raise TooManySkippedMessagesError(
                    f"message {counter} of a new chain would skip {counter} keys "
                    f"(limit {self.limits.max_skip})"
                )
            # A new remote ratchet key: the receiving half of the DH ratchet step (§3.5 DHRatchet).
            try:
                dh_out = self._sending_ratchet_private.agree(their_key)
            except InvalidKeyError as error:
                raise InvalidMessageError(f"unusable ratchet key: {error}") from None
            new_root_key, chain_key = root_step(self.root_key, dh_out)
            index = 0
            if trace is not None:
                emit(
                    trace,
                    "ratchet.dh_step",
                    {
                        "direction": "receiving",
                        "their_ratchet_key": their_key.fingerprint(),
                        "our_ratchet_key": self.sending_ratchet_key.fingerprint(),
                    },
                    {"dh": dh_out, "root_key": new_root_key, "chain_key": chain_key},
                )

        # Walk the chain up to the message, keeping the seeds of the keys we skip.  Only the newest
        # max_stored_skipped_keys could survive eviction, so older ones are not even kept here.
        new_skipped: list[tuple[int, bytes]] = []
        keep_from = counter - self.limits.max_stored_skipped_keys
        while index < counter:
            seed, chain_key = chain_step(chain_key)
            if index >= keep_from:
                new_skipped.append((index, seed))
            index += 1
        seed, next_chain_key = chain_step(chain_key)
        if trace is not None:
            emit(
                trace,
                "ratchet.chain_step",
                {
                    "chain": "receiving",
                    "index": counter,
                    "ratchet_key": their_key.fingerprint(),
                    "skipped": len(new_skipped),
                },
                {"chain_key": chain_key, "next_chain_key": next_chain_key},
            )
        # As libsignal does: the Double Ratchet's chain first, then SPQR (on a copy), then the MAC.
        pq_trial, pq_key = self._pq_receive(message, trace)
        plaintext = self._open(message, seed, trace, pq_key)

        # The message is authentic: commit.  Nothing below can fail.
        if pq_trial is not None:
            self.pq_ratchet = pq_trial
        if chain is None:
            assert new_root_key is not None  # Set on the branch that left chain None.
            self._commit_receiving_step(their_key, new_root_key, next_chain_key, counter + 1)
        else:
            chain.chain_key = next_chain_key
            chain.index = counter + 1
        if new_skipped:
            self._store_skipped(raw, new_skipped, trace)
        self.pending_prekey = None
        return plaintext

    def _pq_receive(
        self, message: SignalMessage, trace: Trace | None
    ) -> tuple[PostQuantumRatchet | None, bytes | None]:
        """SPQR's part of receiving, on a copy: the copy to commit after the MAC, and the key."""
        if self.session_version == CIPHERTEXT_VERSION:
            return None, None
        if self.pq_ratchet is None:
            if message.pq_ratchet:
                raise InvalidMessageError("a post-quantum ratchet message for a session that runs none")
            return None, None
        trial = self.pq_ratchet.copy()
        epoch_before = _pq_epoch(trial) if trace is not None else None
        try:
            pq_key = trial.recv(message.pq_ratchet)
        except E2EError as error:
            raise InvalidMessageError(f"post-quantum ratchet: {error}") from None
        if trace is not None:
            _emit_pq_step(trace, trial, "decrypt", message.counter, message.pq_ratchet, pq_key, epoch_before)
        return trial, pq_key

    def _open(self, message: SignalMessage, seed: bytes, trace: Trace | None, pq_key: bytes | None) -> bytes:
        keys = (
            derive_message_keys(seed)
            if self.session_version == CIPHERTEXT_VERSION
            else (derive_salted_message_keys(seed, pq_key))
        )
        try:
            message.verify_mac_with(keys[32:64], self._associated_in)
        except InvalidMessageError:
            if trace is not None:
                emit(trace, "ratchet.mac", {"ok": False, "counter": message.counter})
            raise
        if trace is not None:
            emit(trace, "ratchet.mac", {"ok": True, "counter": message.counter})
            emit(
                trace,
                "ratchet.message_key",
                {"direction": "decrypt", "counter": message.counter},
                {"message_keys": keys},
            )
        return cbc_decrypt(keys[:32], keys[64:], message.ciphertext)

    def _commit_receiving_step(
        self, their_key: PublicKey, root_key: bytes, chain_key: bytes, index: int
    ) -> None:
        """Commit the receiving half of a DH ratchet step; the sending half is due at the next send."""
        self.receiver_chains.append(ReceiverChain(their_key, chain_key, index))
        if len(self.receiver_chains) > self.limits.max_receiver_chains:
            del self.receiver_chains[: len(self.receiver_chains) - self.limits.max_receiver_chains]
        self.root_key = root_key
        self.sending_chain_pending = True

    def _store_skipped(self, raw: bytes, seeds: list[tuple[int, bytes]], trace: Trace | None) -> None:
        skipped = self.skipped
        for counter, seed in seeds:
            skipped[(raw, counter)] = seed
        excess = len(skipped) - self.limits.max_stored_skipped_keys
        if excess > 0:
            for key in list(skipped)[:excess]:
                del skipped[key]
        if trace is not None:
            emit(
                trace,
                "ratchet.skipped_keys_stored",
                {"stored": len(seeds), "evicted": max(excess, 0), "total": len(skipped)},
            )

    # -- storage --------------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """This state as protobuf-style fields (the layout is documented in :mod:`e2e.session`)."""
        chains = b"".join(
            chain.ratchet_key.raw + chain.chain_key + chain.index.to_bytes(4, "big")
            for chain in self.receiver_chains
        )
        skipped = b"".join(
            raw + counter.to_bytes(4, "big") + seed for (raw, counter), seed in self.skipped.items()
        )
        static = self._serialized_static
        if static is None:
            # Fields that never change for a state are encoded once, on its first serialization.
            head = b"".join(
                (
                    protobuf.encode_uint_field(1, self.session_version),
                    protobuf.encode_bytes_field(2, self.local_identity_key.serialize()),
                    protobuf.encode_bytes_field(3, self.remote_identity_key.serialize()),
                )
            )
            tail = b"".join(
                (
                    protobuf.encode_uint_field(13, self.local_registration_id),
                    protobuf.encode_uint_field(14, self.remote_registration_id),
                    protobuf.encode_bytes_field(15, self.base_key.serialize()),
                    # X3DH states leave field 16 out, so that they are stored exactly as before
                    # it existed.
                    b""
                    if self.agreement == "x3dh"
                    else protobuf.encode_uint_field(16, _AGREEMENT_NUMBERS[self.agreement]),
                )
            )
            static = self._serialized_static = (head, tail)
        parts = [
            static[0],
            protobuf.encode_bytes_field(4, self.root_key),
            protobuf.encode_bytes_field(5, self._sending_ratchet_private.serialize()),
            protobuf.encode_bytes_field(6, self._serialized_sending_key),
            protobuf.encode_bytes_field(7, self.sending_chain_key),
            protobuf.encode_uint_field(8, self.sending_index),
            protobuf.encode_uint_field(9, self.previous_counter),
            protobuf.encode_bytes_field(10, chains),
            protobuf.encode_bytes_field(11, skipped),
        ]
        if self.sending_chain_pending:
            parts.append(_PENDING_SENDING_CHAIN)
        pending = self.pending_prekey
        if pending is not None:
            pending_fields = b"".join(
                (
                    b"" if pending.pre_key_id is None else protobuf.encode_uint_field(1, pending.pre_key_id),
                    protobuf.encode_uint_field(2, pending.signed_pre_key_id),
                    protobuf.encode_bytes_field(3, pending.base_key.serialize()),
                    b""
                    if pending.kem_pre_key_id is None
                    else protobuf.encode_uint_field(4, pending.kem_pre_key_id),
                    b""
                    if pending.kem_ciphertext is None
                    else protobuf.encode_bytes_field(5, pending.kem_ciphertext.serialize()),
                )
            )
            parts.append(protobuf.encode_bytes_field(12, pending_fields))
        parts.append(static[1])
        if self.pq_ratchet is not None:
            parts.append(protobuf.encode_bytes_field(18, self.pq_ratchet.serialize()))
        return b"".join(parts)

    @classmethod
    def deserialize(
        cls,
        data: bytes,
        limits: Limits = DEFAULT_LIMITS,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> RatchetState:
        """Invert :meth:`serialize`; anything malformed raises :class:`StateFormatError`.

        A state that holds a post-quantum ratchet (field 18) needs ``pq_ratchet_factory`` to load it.
        """
        try:
            return cls._deserialize(data, limits, pq_ratchet_factory)
        except StateFormatError:
            raise
        except DecodeError as error:
            raise StateFormatError(f"session state: {error}") from None

    @classmethod
    def _deserialize(
        cls, data: bytes, limits: Limits, pq_ratchet_factory: PostQuantumRatchetFactory | None
    ) -> RatchetState:
        fields = protobuf.parse(data, _STATE_SCHEMA)
        version = protobuf.get_uint(fields, 1, "session version")
        if version not in (CIPHERTEXT_VERSION, CIPHERTEXT_VERSION_V4):
            raise StateFormatError(f"session version {version} is not supported")

        def key(number: int, what: str) -> PublicKey:
            return PublicKey.deserialize(protobuf.get_bytes(fields, number, what))

        def secret(number: int, what: str) -> bytes:
            value = protobuf.get_bytes(fields, number, what)
            if len(value) != KEY_LENGTH:
                raise StateFormatError(f"{what} is not {KEY_LENGTH} bytes")
            return value

        private = PrivateKey(secret(5, "sending ratchet private key"))
        chains_data = protobuf.get_bytes(fields, 10, "receiver chains")
        skipped_data = protobuf.get_bytes(fields, 11, "skipped keys")
        if len(chains_data) % _PACKED_ENTRY or len(skipped_data) % _PACKED_ENTRY:
            raise StateFormatError("packed receiver chains or skipped keys of the wrong length")
        chains = [
            ReceiverChain(
                PublicKey(chains_data[i : i + 32]),
                chains_data[i + 32 : i + 64],
                int.from_bytes(chains_data[i + 64 : i + 68], "big"),
            )
            for i in range(0, len(chains_data), _PACKED_ENTRY)
        ][-limits.max_receiver_chains :]
        skipped: dict[tuple[bytes, int], bytes] = {}
        for i in range(0, len(skipped_data), _PACKED_ENTRY):
            entry = (skipped_data[i : i + 32], int.from_bytes(skipped_data[i + 32 : i + 36], "big"))
            if entry in skipped:
                raise StateFormatError("a skipped message key is stored twice")
            skipped[entry] = skipped_data[i + 36 : i + 68]
        excess = len(skipped) - limits.max_stored_skipped_keys
        for entry in list(skipped)[: max(excess, 0)]:
            del skipped[entry]
        pending = None
        if 12 in fields:
            pending_fields = protobuf.parse(protobuf.get_bytes(fields, 12, "pending prekey"), _PENDING_SCHEMA)
            if (4 in pending_fields) != (5 in pending_fields):
                raise StateFormatError("a pending KEM prekey id without its KEM ciphertext, or the reverse")
            pending = PendingPreKey(
                protobuf.get_uint(pending_fields, 1, "pending one-time prekey id", UINT32_MAX)
                if 1 in pending_fields
                else None,
                protobuf.get_uint(pending_fields, 2, "pending signed prekey id", UINT32_MAX),
                PublicKey.deserialize(protobuf.get_bytes(pending_fields, 3, "pending base key")),
                protobuf.get_uint(pending_fields, 4, "pending KEM prekey id", UINT32_MAX)
                if 4 in pending_fields
                else None,
                (KyberCiphertext if version == CIPHERTEXT_VERSION_V4 else KemCiphertext).deserialize(
                    protobuf.get_bytes(pending_fields, 5, "pending KEM ciphertext")
                )
                if 5 in pending_fields
                else None,
            )
        sending_chain_pending = False
        if 17 in fields:
            if protobuf.get_uint(fields, 17, "sending chain pending") != 1:
                raise StateFormatError("field 17 (sending chain pending) is stored only as 1")
            if not chains:
                raise StateFormatError("a pending sending chain without a receiver chain to answer")
            sending_chain_pending = True
        agreement: Agreement = "x3dh"
        if 16 in fields:
            code = protobuf.get_uint(fields, 16, "key agreement")
            if code not in _AGREEMENT_CODES:
                raise StateFormatError(f"unknown key agreement code {code}")
            agreement = _AGREEMENT_CODES[code]
        if (version == CIPHERTEXT_VERSION_V4) != (agreement == "pqxdh_v4"):
            raise StateFormatError(f"a version-{version} state started by {agreement}")
        pq_ratchet = None
        if 18 in fields:
            if version != CIPHERTEXT_VERSION_V4:
                raise StateFormatError("a post-quantum ratchet in a version-3 state")
            if pq_ratchet_factory is None:
                raise StateFormatError(
                    "the state holds a post-quantum ratchet and no factory was given to load it"
                )
            pq_ratchet = pq_ratchet_factory.load(protobuf.get_bytes(fields, 18, "post-quantum ratchet"))
        return cls(
            local_identity_key=key(2, "local identity key"),
            remote_identity_key=key(3, "remote identity key"),
            root_key=secret(4, "root key"),
            sending_ratchet_key=key(6, "sending ratchet key"),
            sending_ratchet_private=private,
            sending_chain_key=secret(7, "sending chain key"),
            sending_index=protobuf.get_uint(fields, 8, "sending index", UINT32_MAX + 1),
            previous_counter=protobuf.get_uint(fields, 9, "previous counter", UINT32_MAX),
            receiver_chains=chains,
            skipped=skipped,
            pending_prekey=pending,
            local_registration_id=protobuf.get_uint(fields, 13, "local registration id", UINT32_MAX),
            remote_registration_id=protobuf.get_uint(fields, 14, "remote registration id", UINT32_MAX),
            base_key=key(15, "base key"),
            limits=limits,
            agreement=agreement,
            sending_chain_pending=sending_chain_pending,
            session_version=version,
            pq_ratchet=pq_ratchet,
        )

    def __repr__(self) -> str:
        return (
            f"RatchetState(remote_identity_key={self.remote_identity_key.fingerprint()}, "
            f"base_key={self.base_key.fingerprint()}, "
            f"sending_ratchet_key={self.sending_ratchet_key.fingerprint()}, "
            f"sending_index={self.sending_index}, receiver_chains={len(self.receiver_chains)}, "
            f"skipped_keys={len(self.skipped)}, pending_prekey={self.pending_prekey is not None}, "
            f"version={self.session_version}, agreement={self.agreement}, "
            f"pq_ratchet={self.pq_ratchet is not None}, sending_chain_pending={self.sending_chain_pending}, "
            "keys=<redacted>)"
        )


def _version_and_pq_ratchet(
    agreement: Agreement,
    secret: SharedSecret,
    factory: PostQuantumRatchetFactory | None,
    direction: Direction,
) -> tuple[int, PostQuantumRatchet | None]:
    """The session version an agreement starts, and the post-quantum ratchet of a version-4 one."""
    if agreement != "pqxdh_v4":
        if factory is not None:
            raise ValueError("a post-quantum ratchet runs in version-4 sessions only")
        return CIPHERTEXT_VERSION, None
    if secret.pq_ratchet_key is None:
        raise ValueError("a version-4 session starts from a secret with a pq_ratchet_key")
    if factory is None:
        return CIPHERTEXT_VERSION_V4, None
    return CIPHERTEXT_VERSION_V4, factory.initial(secret.pq_ratchet_key, direction)


def _pq_epoch(pq_ratchet: PostQuantumRatchet | None) -> int | None:
    """The epoch an explained post-quantum ratchet reports (explain mode only), else ``None``."""
    if isinstance(pq_ratchet, ExplainedPostQuantumRatchet):
        epoch = pq_ratchet.explain().get("spqr_epoch")
        return epoch if isinstance(epoch, int) else None
    return None


def _emit_pq_step(
    trace: Trace,
    pq_ratchet: PostQuantumRatchet | None,
    direction: str,
    counter: int,
    pq_message: bytes,
    pq_key: bytes | None,
    epoch_before: int | None,
) -> None:
    """The Triple Ratchet's SPQR step for explain mode: ``ratchet.pq_key`` (what field 5 carried,
    whether a key was mixed into the message keys) and ``ratchet.pq_epoch`` when the epoch moved.
    """
    public: dict[str, str | int | bool] = {
        "direction": direction,
        "counter": counter,
        "pq_ratchet_bytes": len(pq_message),
        "pq_key_mixed": pq_key is not None,
    }
    epoch_after = None
    if isinstance(pq_ratchet, ExplainedPostQuantumRatchet):
        public.update(pq_ratchet.describe(pq_message))
        public.update({f"our_{name}": value for name, value in pq_ratchet.explain().items()})
        epoch_after = _pq_epoch(pq_ratchet)
    emit(trace, "ratchet.pq_key", public, {} if pq_key is None else {"pq_key": pq_key})
    if epoch_before is not None and epoch_after is not None and epoch_after != epoch_before:
        emit(trace, "ratchet.pq_epoch", {"direction": direction, "from": epoch_before, "to": epoch_after})
