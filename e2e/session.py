"""Sessions with one remote device: the current Double Ratchet state and the archived ones.

What this module owns
---------------------
:class:`SessionRecord`, the equivalent of libsignal's ``SessionRecord`` joined with the parts of
its ``SessionBuilder`` and ``SessionCipher`` that touch one record:

* :meth:`SessionRecord.initiate` — Alice: X3DH with Bob's bundle, or PQXDH when the bundle
  carries a signed KEM prekey (:mod:`e2e.pqxdh`), then the ratchet's initialization.  Until she
  has decrypted a reply her messages are PreKeySignalMessages
  (:attr:`MessageType.PREKEY <e2e.wire.MessageType>`) carrying the X3DH header, plus the KEM
  prekey id and ciphertext for PQXDH.
* :meth:`SessionRecord.decrypt_prekey_message` — Bob: a PreKeySignalMessage whose base key one
  of our states already knows is decrypted by the states; otherwise X3DH's or, when the message
  carries a KEM ciphertext, PQXDH's ``respond`` builds a new state, which becomes current (the
  old current is archived) once the message decrypted.

Each state records the agreement that started it (:attr:`SessionRecord.agreement`).  A bundle
that advertises a KEM prekey is never used with X3DH (:class:`~e2e.errors.DowngradeError`); a
record that has held a PQXDH state does not start an X3DH one unless told to
(``allow_downgrade``); and Bob may refuse X3DH messages altogether (``require_pqxdh``).
* :meth:`SessionRecord.encrypt` / :meth:`SessionRecord.decrypt` on the current state, where
  decrypting also tries the archived states and promotes the one that succeeds.

Why several states
------------------
When both sides start a session at the same time, each receives the other's PreKeySignalMessage
and answers it from a new state, archiving its own.  Messages then arrive for the archived state;
it is tried, decrypts, and is promoted to current, and the two sides converge on one pair of
states as soon as one message is answered.  At most :attr:`Limits.max_archived_states
<e2e.ratchet.Limits>` archived states are kept, the most recently used first.

Invariant
---------
Every method either succeeds or raises with the record unchanged: a state is only modified by
its own :meth:`~e2e.ratchet.RatchetState.decrypt`, which commits nothing unless the message
decrypted, and a new state only enters the record after it has decrypted its first message.

Storage format, versions 1 to 3 (see :mod:`e2e.records` for the header shared by every record)
------------------------------------------------------------------------------------------------
``"S" ‖ version ‖ protobuf{1: current state, 2: archived state (repeated, most recent first)}``,
each state being the protobuf-style record :meth:`~e2e.ratchet.RatchetState.serialize` writes:

=====  =================================  ================================================
field  type                               content
=====  =================================  ================================================
1      varint                             session version (3)
2, 3   bytes (33)                         local and remote identity keys, ``0x05 ‖ 32``
4      bytes (32)                         root key ``RK``
5, 6   bytes (32), bytes (33)             sending ratchet private key and public key ``DHs``
7, 8   bytes (32), varint                 sending chain key ``CKs`` and ``Ns``
9      varint                             ``PN``
10     bytes, 68-byte entries             receiver chains, oldest first: ``DHr`` (32) ‖ ``CKr``
                                          (32) ‖ ``Nr`` (uint32 big-endian)
11     bytes, 68-byte entries             ``MKSKIPPED``, oldest first: ``DHr`` (32) ‖ ``N``
                                          (uint32 big-endian) ‖ ``mk`` (32)
12     bytes (nested)                     pending X3DH header: {1: one-time prekey id,
                                          2: signed prekey id, 3: base key}; absent once
                                          a reply has been received
13,14  varint                             local and remote registration ids
15     bytes (33)                         Alice's base key, which names the state
16     varint (version 2)                 the agreement that started the state: 2 = PQXDH;
                                          absent = X3DH
12.4   varint (version 2)                 pending KEM prekey id (PQXDH)
12.5   bytes (1569, version 2)            pending KEM ciphertext ``0x0A ‖ c`` (PQXDH)
17     varint (version 3)                 1: the sending half of a DH ratchet step is due at
                                          the next send (:mod:`e2e.ratchet`); fields 5–9
                                          then hold the previous sending chain; absent = no
=====  =================================  ================================================

Version 2 added fields 16, 12.4 and 12.5.  Code that reads only version 1 would skip them
silently and then send PQXDH messages without their KEM ciphertext, so a record with any of them
is written as version 2, which such code refuses; a record of X3DH states only is written as
version 1, byte for byte as before.  Version 3 added field 17: code that reads only versions 1
and 2 would skip it and encrypt on a sending chain the state no longer uses, so a record with a
pending sending chain is written as version 3 (the lowest version that can hold a record is always
the one written).  All three versions are read, and a record that holds a field of a later
version than its header says is refused.

Packed entries keep a state with thousands of skipped keys a single ``bytes.join`` to write and a
slice loop to read.  The sending ratchet's public key is stored next to its private key so that
loading a state costs no scalar multiplication; records are the owner's own storage, not input
from the network.

What this module does not know
------------------------------
Where prekeys, identities and records are stored, or whether the remote identity key is trusted:
the caller checks identities (see :class:`~e2e.errors.UntrustedIdentityError`) and deletes a
one-time prekey after its first message decrypted.  :mod:`e2e.session_cipher` does both over the
store protocols of :mod:`e2e.stores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e import pqxdh, pqxdh_v4, protobuf, x3dh
from e2e.errors import (
    DecodeError,
    DowngradeError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    NoSessionError,
    StateFormatError,
    TooManySkippedMessagesError,
)
from e2e.explain import Trace, emit
from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.kyber import KyberKeyPair, KyberPublicKey
from e2e.pq_ratchet import PostQuantumRatchetFactory
from e2e.ratchet import DEFAULT_LIMITS, Agreement, Limits, PendingPreKey, RatchetState
from e2e.records import SESSION_RECORD_KIND, check_header, header
from e2e.wire import (
    CIPHERTEXT_VERSION_V4,
    UINT32_MAX,
    MessageType,
    PreKeySignalMessage,
    SignalMessage,
    encode_prekey_signal_message,
)
from e2e.x3dh import PreKeyBundle

__all__ = ["Ciphertext", "SessionRecord", "SESSION_FORMAT_VERSIONS"]

SESSION_FORMAT_VERSIONS: Final = (1, 2, 3, 4)
"""The session record format versions this code reads (module docstring); it writes the lower
one that can hold the record."""

_RECORD_SCHEMA: Final = {
    1: protobuf.Field(protobuf.LEN),
    2: protobuf.Field(protobuf.LEN, repeated=True),
}


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """An encrypted message ready to send: its libsignal type and its wire bytes."""

    type: MessageType
    body: bytes

    def __repr__(self) -> str:
        return f"Ciphertext(type={self.type.name}, body=<{len(self.body)} bytes>)"


class SessionRecord:
    """All session states with one remote device: the current one and archived ones, as libsignal keeps."""

    __slots__ = ("limits", "pq_ratchet_factory", "_current", "_archived")

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, pq_ratchet_factory: PostQuantumRatchetFactory | None = None
    ) -> None:
        self.limits = limits
        # The post-quantum ratchet (SPQR) that version-4 states of this record start and load; with
        # None they run without one (e2e.pq_ratchet).
        self.pq_ratchet_factory = pq_ratchet_factory
        self._current: RatchetState | None = None
        self._archived: list[RatchetState] = []

    # -- starting sessions ----------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        our_identity_key: KeyPair,
        our_registration_id: int,
        their_bundle: PreKeyBundle,
        rng: Rng,
        limits: Limits = DEFAULT_LIMITS,
        trace: Trace | None = None,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> SessionRecord:
        """Alice: X3DH with ``their_bundle`` (its signatures checked first) and a new current state;
        PQXDH instead when the bundle carries a signed KEM prekey: Signal's, message version 4, for
        a Kyber1024 prekey, the project's ML-KEM PQXDH (version 3) for an ML-KEM-1024 one.
        """
        record = cls(limits, pq_ratchet_factory)
        record.start_session(our_identity_key, our_registration_id, their_bundle, rng, trace)
        return record

    def start_session(
        self,
        our_identity_key: KeyPair,
        our_registration_id: int,
        their_bundle: PreKeyBundle,
        rng: Rng,
        trace: Trace | None = None,
        *,
        allow_downgrade: bool = False,
    ) -> None:
        """:meth:`initiate` on an existing record: the new state becomes current, the old is archived.

        A record that holds a PQXDH state (current or archived) refuses to start an X3DH session
        from a bundle without a KEM prekey: the peer published one before, so its absence now is
        more likely a relay withholding it than the peer giving up PQXDH.  That raises
        :class:`~e2e.errors.DowngradeError`; pass ``allow_downgrade=True`` after the user has
        accepted it (for instance, a peer that reinstalled an older client).
        """
        _check_registration_id(our_registration_id)
        if (
            their_bundle.kem_pre_key is None
            and not allow_downgrade
            and any(state.agreement != "x3dh" for state in self._states())
        ):
            raise DowngradeError(
                "an earlier session with this device used PQXDH, and this bundle has no KEM prekey"
            )
        if (
            not isinstance(their_bundle.kem_pre_key, KyberPublicKey)
            and not allow_downgrade
            and any(state.session_version == CIPHERTEXT_VERSION_V4 for state in self._states())
        ):
            raise DowngradeError(
                "an earlier session with this device was version 4, and this bundle has no Kyber prekey"
            )
        self._refuse_losing_the_pq_ratchet(allow_downgrade)
        agreement: Agreement
        if isinstance(their_bundle.kem_pre_key, KyberPublicKey):
            message, secret = pqxdh_v4.initiate(our_identity_key, their_bundle, rng, trace)
            agreement = "pqxdh_v4"
        elif their_bundle.kem_pre_key is not None:
            message, secret = pqxdh.initiate(our_identity_key, their_bundle, rng, trace)
            agreement = "pqxdh"
        else:
            message, secret = x3dh.initiate(our_identity_key, their_bundle, rng, trace)
            agreement = "x3dh"
        state = RatchetState.initialize_alice(
            secret,
            our_identity_key.public_key,
            their_bundle.identity_key,
            their_bundle.signed_pre_key,
            message.base_key,
            PendingPreKey(
                message.pre_key_id,
                message.signed_pre_key_id,
                message.base_key,
                message.kem_pre_key_id,
                message.kem_ciphertext,
            ),
            our_registration_id,
            their_bundle.registration_id,
            rng,
            self.limits,
            trace,
            agreement=agreement,
            pq_ratchet_factory=self.pq_ratchet_factory if agreement == "pqxdh_v4" else None,
        )
        self._install(state)

    def _refuse_losing_the_pq_ratchet(self, allow_downgrade: bool) -> None:
        """A record whose states run a post-quantum ratchet starts no state without one."""
        if (
            self.pq_ratchet_factory is None
            and not allow_downgrade
            and any(state.pq_ratchet is not None for state in self._states())
        ):
            raise DowngradeError(
                "an earlier session with this device ran a post-quantum ratchet, and this record has none"
                " to start (no pq_ratchet_factory)"
            )

    def _install(self, state: RatchetState) -> None:
        if self._current is not None:
            self._archived.insert(0, self._current)
            del self._archived[self.limits.max_archived_states :]
        self._current = state

    def archive_current_state(self) -> None:
        """Move the current state to the archive (libsignal's ``archiveCurrentState``)."""
        if self._current is not None:
            self._archived.insert(0, self._current)
            del self._archived[self.limits.max_archived_states :]
            self._current = None

    # -- inspection -----------------------------------------------------------------------------

    def has_current_state(self) -> bool:
        """Whether there is a current state to encrypt with."""
        return self._current is not None

    @property
    def their_identity_key(self) -> PublicKey | None:
        """The remote identity key of the current state (``None`` without one)."""
        return None if self._current is None else self._current.remote_identity_key

    @property
    def current_state(self) -> RatchetState | None:
        """The current state (read it, do not modify it)."""
        return self._current

    @property
    def archived_states(self) -> tuple[RatchetState, ...]:
        """The archived states, most recently used first."""
        return tuple(self._archived)

    @property
    def agreement(self) -> Agreement | None:
        """The key agreement (``"x3dh"``, ``"pqxdh"`` or ``"pqxdh_v4"``) that started the current state."""
        return None if self._current is None else self._current.agreement

    @property
    def session_version(self) -> int | None:
        """The message version (3 or 4) of the current state."""
        return None if self._current is None else self._current.session_version

    @property
    def remote_registration_id(self) -> int | None:
        """The peer's registration id as recorded by the current state."""
        return None if self._current is None else self._current.remote_registration_id

    def has_unacknowledged_prekey_message(self) -> bool:
        """Whether our messages are still PreKeySignalMessages (no reply decrypted yet)."""
        return self._current is not None and self._current.pending_prekey is not None

    def has_state_for_base_key(self, base_key: PublicKey) -> bool:
        """Whether any state (current or archived) was built from the X3DH base key ``base_key``."""
        return any(state.base_key == base_key for state in self._states())

    def _states(self) -> list[RatchetState]:
        return ([self._current] if self._current is not None else []) + self._archived

    # -- messages -------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, rng: Rng, trace: Trace | None = None) -> Ciphertext:
        """Encrypt with the current state; a PREKEY message until a reply has been decrypted.

        ``rng`` draws the fresh ratchet key of a DH ratchet step when this is the first message
        after a new remote ratchet key arrived (:mod:`e2e.ratchet`: the sending half of the step is
        done at the next send); otherwise it is not used.
        """
        state = self._current
        if state is None:
            raise NoSessionError("no current session state to encrypt with")
        serialized = state.encrypt(plaintext, rng, trace)
        pending = state.pending_prekey
        if pending is None:
            return Ciphertext(MessageType.WHISPER, serialized)
        body = encode_prekey_signal_message(
            state.local_registration_id,
            pending.pre_key_id,
            pending.signed_pre_key_id,
            pending.base_key.serialize(),
            state.local_identity_key.serialize(),
            serialized,
            pending.kem_pre_key_id,
            None if pending.kem_ciphertext is None else pending.kem_ciphertext.serialize(),
            version=state.session_version,
        )
        return Ciphertext(MessageType.PREKEY, body)

    def decrypt(self, body: bytes, rng: Rng | None = None, trace: Trace | None = None) -> bytes:
        """Decrypt a SignalMessage (type ``WHISPER``) with the current or an archived state.

        The state that decrypts becomes current.  Raises :class:`~e2e.errors.DecodeError`,
        :class:`~e2e.errors.NoSessionError`, :class:`~e2e.errors.DuplicateMessageError`,
        :class:`~e2e.errors.TooManySkippedMessagesError` or
        :class:`~e2e.errors.InvalidMessageError`; the record is unchanged after any of them.

        ``rng`` is not used (a DH ratchet step's fresh key is drawn by the next :meth:`encrypt`);
        it is still accepted, positionally as before, so that older callers keep working.
        """
        message = SignalMessage.deserialize(body)
        return self.decrypt_message(message, rng, trace)

    def decrypt_message(
        self, message: SignalMessage, rng: Rng | None = None, trace: Trace | None = None
    ) -> bytes:
        """:meth:`decrypt` for an already decoded message (``rng`` is not used either)."""
        states = self._states()
        if not states:
            raise NoSessionError("no session state to decrypt with")
        too_many: TooManySkippedMessagesError | None = None
        for position, state in enumerate(states):
            try:
                plaintext = state.decrypt(message, rng, trace)
            except DuplicateMessageError:
                raise
            except TooManySkippedMessagesError as error:
                # Definite when this state owns the ratchet key; otherwise the message may belong
                # to another state.
                if state.has_receiver_chain(message.ratchet_key):
                    raise
                too_many = too_many or error
            except InvalidMessageError:
                continue
            else:
                if position > 0:
                    self._promote(position - 1, trace)
                return plaintext
        if too_many is not None:
            raise too_many
        raise InvalidMessageError(f"no session state decrypts this message ({len(states)} tried)")

    def _promote(self, archived_position: int, trace: Trace | None) -> None:
        state = self._archived.pop(archived_position)
        if self._current is not None:
            self._archived.insert(0, self._current)
        self._current = state
        emit(trace, "session.state_promoted", {"base_key": state.base_key.fingerprint()})

    def decrypt_prekey_message(
        self,
        message: PreKeySignalMessage | bytes,
        our_identity_key: KeyPair,
        our_signed_pre_key: KeyPair | None,
        our_one_time_pre_key: KeyPair | None,
        rng: Rng | None = None,
        trace: Trace | None = None,
        *,
        our_registration_id: int,
        our_kem_pre_key: KemKeyPair | KyberKeyPair | None = None,
        require_pqxdh: bool = False,
        allow_downgrade: bool = False,
    ) -> bytes:
        """Bob: decrypt Alice's PreKeySignalMessage, starting a new state if its base key is new.

        ``message`` is the wire bytes (type ``PREKEY``) or an already decoded message.  The caller
        looked ``our_signed_pre_key``, ``our_one_time_pre_key`` and (for a message with a KEM
        ciphertext) ``our_kem_pre_key`` up by ``message.signed_pre_key_id``,
        ``message.pre_key_id`` and ``message.kem_pre_key_id``, and deletes the one-time prekeys
        (EC and KEM) once this returns; a last-resort KEM prekey stays.
        (:class:`e2e.session_cipher.SessionCipher` does all of that over stores.)

        A repeated message (its base key already names one of our states, see
        :meth:`has_state_for_base_key`) is decrypted by the existing state and needs no prekey:
        ``our_signed_pre_key`` may then be ``None``; it must still carry that state's identity
        key, and a replayed one raises :class:`~e2e.errors.DuplicateMessageError`.  A new base
        key without a signed prekey raises :class:`~e2e.errors.InvalidMessageError`.

        A message with a KEM ciphertext is answered with PQXDH, one without with X3DH, unless
        ``require_pqxdh`` is set: then it raises :class:`~e2e.errors.DowngradeError` (for a
        device that publishes KEM prekeys and will not talk to peers who ignore them).
        ``our_registration_id`` (required: libsignal takes it from its identity store) is
        recorded in a new state.  ``rng`` is not used and may be left out.

        A version-4 message (``0x44``) is answered with Signal's PQXDH (:mod:`e2e.pqxdh_v4`), and
        ``our_kem_pre_key`` is then the Kyber prekey it names (``None`` when the lookup found none:
        :class:`~e2e.errors.UnknownPreKeyError`).  A record that holds a version-4 state refuses to
        start a version-3 one (:class:`~e2e.errors.DowngradeError`) unless ``allow_downgrade``.
        """
        _check_registration_id(our_registration_id)
        if isinstance(message, bytes):
            message = PreKeySignalMessage.deserialize(message)
        elif not isinstance(message, PreKeySignalMessage):
            raise TypeError("decrypt_prekey_message takes a PreKeySignalMessage or its wire bytes")
        known = [state for state in self._states() if state.base_key == message.base_key]
        if known:
            # The inner MAC is checked with the identity key the state recorded, so the header's
            # copy must be that one: otherwise a changed identity key would go unnoticed here.
            if all(state.remote_identity_key != message.identity_key for state in known):
                raise InvalidMessageError(
                    "the identity key differs from the one of the session with this base key"
                )
            emit(trace, "session.known_base_key", {"base_key": message.base_key.fingerprint()})
            return self.decrypt_message(message.message, rng, trace)
        if our_signed_pre_key is None:
            raise InvalidMessageError(
                f"a new session needs the signed prekey {message.signed_pre_key_id}, and none was given"
            )
        initial = message.initial_message()
        agreement: Agreement
        if (
            message.version != CIPHERTEXT_VERSION_V4
            and not allow_downgrade
            and any(state.session_version == CIPHERTEXT_VERSION_V4 for state in self._states())
        ):
            raise DowngradeError(
                "a version-3 PreKeySignalMessage from a device whose session with us is version 4"
            )
        self._refuse_losing_the_pq_ratchet(allow_downgrade)
        if message.version == CIPHERTEXT_VERSION_V4:
            if our_kem_pre_key is not None and not isinstance(our_kem_pre_key, KyberKeyPair):
                raise InvalidKeyError("a version-4 PreKeySignalMessage needs the Kyber prekey it names")
            secret = pqxdh_v4.respond(
                our_identity_key, our_signed_pre_key, our_one_time_pre_key, our_kem_pre_key, initial, trace
            )
            agreement = "pqxdh_v4"
        elif initial.kem_ciphertext is not None:
            if our_kem_pre_key is not None and not isinstance(our_kem_pre_key, KemKeyPair):
                raise InvalidKeyError("a version-3 PQXDH message needs the ML-KEM prekey it names")
            secret = pqxdh.respond(
                our_identity_key, our_signed_pre_key, our_one_time_pre_key, our_kem_pre_key, initial, trace
            )
            agreement = "pqxdh"
        elif require_pqxdh:
            raise DowngradeError("the PreKeySignalMessage was made with X3DH, and this device requires PQXDH")
        else:
            secret = x3dh.respond(our_identity_key, our_signed_pre_key, our_one_time_pre_key, initial, trace)
            agreement = "x3dh"
        state = RatchetState.initialize_bob(
            secret,
            our_identity_key.public_key,
            message.identity_key,
            our_signed_pre_key,
            message.base_key,
            our_registration_id,
            message.registration_id,
            self.limits,
            trace,
            agreement=agreement,
            pq_ratchet_factory=self.pq_ratchet_factory if agreement == "pqxdh_v4" else None,
        )
        plaintext = state.decrypt(message.message, rng, trace)
        self._install(state)
        emit(trace, "session.new_state", {"base_key": message.base_key.fingerprint()})
        return plaintext

    # -- storage --------------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """The record in storage format 1, or 2 if a state needs it (module docstring); never pickle."""
        version = max((_format_version(state) for state in self._states()), default=1)
        parts = [header(SESSION_RECORD_KIND, version)]
        if self._current is not None:
            parts.append(protobuf.encode_bytes_field(1, self._current.serialize()))
        parts += [protobuf.encode_bytes_field(2, state.serialize()) for state in self._archived]
        return b"".join(parts)

    @classmethod
    def deserialize(
        cls,
        data: bytes,
        limits: Limits = DEFAULT_LIMITS,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> SessionRecord:
        """Read a record written by :meth:`serialize`; anything else raises :class:`StateFormatError`.

        ``pq_ratchet_factory`` loads the post-quantum ratchets of version-4 states (and starts
        those of new ones).
        """
        body = check_header(data, SESSION_RECORD_KIND, SESSION_FORMAT_VERSIONS)
        try:
            fields = protobuf.parse(body, _RECORD_SCHEMA)
        except DecodeError as error:
            raise StateFormatError(f"session record: {error}") from None
        record = cls(limits, pq_ratchet_factory)
        if 1 in fields:
            record._current = RatchetState.deserialize(
                protobuf.get_bytes(fields, 1, "current state"), limits, pq_ratchet_factory
            )
        archived = protobuf.get_repeated_bytes(fields, 2)
        record._archived = [
            RatchetState.deserialize(state, limits, pq_ratchet_factory)
            for state in archived[: limits.max_archived_states]
        ]
        needed = max((_format_version(state) for state in record._states()), default=1)
        if needed > data[1]:
            raise StateFormatError(
                f"a version-{data[1]} session record holds fields of version {needed} "
                + {2: "(PQXDH)", 3: "(a pending sending chain)", 4: "(a version-4 session)"}[needed]
            )
        return record

    def __repr__(self) -> str:
        return f"SessionRecord(current={self._current!r}, archived={len(self._archived)})"


def _check_registration_id(registration_id: object) -> None:
    """A registration id is an unsigned 32-bit integer, given explicitly (never a silent 0)."""
    if not isinstance(registration_id, int) or isinstance(registration_id, bool):
        raise TypeError(f"a registration id is an int, not {type(registration_id).__name__}")
    if not 0 <= registration_id <= UINT32_MAX:
        raise ValueError("a registration id is an unsigned 32-bit value")


def _format_version(state: RatchetState) -> int:
    """The lowest session record format version that can hold ``state`` (module docstring)."""
    if state.session_version == CIPHERTEXT_VERSION_V4:
        return 4
    if state.sending_chain_pending:
        return 3
    pending = state.pending_prekey
    if state.agreement != "x3dh" or (pending is not None and pending.kem_pre_key_id is not None):
        return 2
    return 1
