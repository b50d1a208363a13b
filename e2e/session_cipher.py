"""Sessions over stores: libsignal's ``SessionBuilder`` and ``SessionCipher`` for one remote device.

What this module owns
---------------------
* :class:`SessionBuilder`: Alice's start (X3DH §3.3, PQXDH §3.3): check the bundle's signatures
  and the trust in its identity key, start a state in the record for the address (the old current
  state is archived), record the identity, save the record.
* :class:`SessionCipher`: ``encrypt`` and ``decrypt`` for one :class:`~e2e.address.ProtocolAddress`
  over a :class:`~e2e.stores.ProtocolStore`.  ``decrypt`` takes the wire bytes of either message
  type with libsignal's type number (:class:`~e2e.wire.MessageType`: 2 ``WHISPER``, 3 ``PREKEY``)
  given explicitly, or a :class:`~e2e.session.Ciphertext` that carries it: the type is never
  guessed from the bytes.  For a PreKeySignalMessage it checks the sender's identity, looks up our
  signed, one-time and KEM prekeys by the ids the message names (X3DH §3.4, PQXDH §3.4) unless a
  state already knows its base key (a repeated PreKey message needs no prekey at all), and once
  the message decrypted it records the identity, deletes the one-time prekey and the one-time KEM
  prekey (a last-resort KEM prekey stays) and saves the record.  The KEM prekey a version-4
  message names is a Kyber1024 one, looked up and deleted in the store's
  :class:`~e2e.stores.KyberPreKeyStore`; with a ``pq_ratchet_factory``
  (:class:`e2e.spqr.SpqrRatchetFactory`) both classes run version-4 sessions with SPQR, as
  libsignal 0.103 requires.
* :func:`make_pre_key_bundle`: Bob's side of the same store: the :class:`~e2e.x3dh.PreKeyBundle`
  that publishes the prekeys named.

Invariant: commit on success
----------------------------
Every method reads and checks first and writes last: a message that fails to parse, comes from
an untrusted identity, names a prekey the store does not hold, or does not decrypt raises a typed
error (:class:`~e2e.errors.DecodeError`, :class:`~e2e.errors.UntrustedIdentityError`,
:class:`~e2e.errors.UnknownPreKeyError`, :class:`~e2e.errors.InvalidMessageError` and its kin)
before any store is written, so every store is exactly as it was.  The writes of one successful
call (identity, used prekeys, record) are meant to be one transaction for a store that has them
(:mod:`e2e.stores`).

Trust
-----
Identities are checked before anything is decrypted: the PreKey message's identity key, or the
bundle's; for a SignalMessage, the identity keys of the record's states.  If one of those is not
trusted (the user accepted a new key while older states remain), the message is decrypted on a
copy of the record and kept only if the state that decrypted it has a trusted identity, as
libsignal checks after decrypting.

What this module does not know
------------------------------
Where the stores keep anything, the network and the clock.  Randomness comes from the ``rng``
argument of :meth:`SessionBuilder.process_pre_key_bundle` and :meth:`SessionCipher.encrypt`;
decrypting draws none.  The low-level API (:class:`~e2e.session.SessionRecord`,
:mod:`e2e.x3dh`, :mod:`e2e.pqxdh`) stays for callers who keep their keys themselves.
"""

from __future__ import annotations

from e2e.address import ProtocolAddress
from e2e.errors import DecodeError, NoSessionError, UnknownPreKeyError, UntrustedIdentityError
from e2e.explain import Trace
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.pq_ratchet import PostQuantumRatchetFactory
from e2e.ratchet import DEFAULT_LIMITS, Limits
from e2e.records import KemPreKeyRecord, KyberPreKeyRecord, PreKeyRecord
from e2e.session import Ciphertext, SessionRecord
from e2e.stores import Direction, ProtocolStore
from e2e.wire import CIPHERTEXT_VERSION_V4, MessageType, PreKeySignalMessage
from e2e.x3dh import PreKeyBundle

__all__ = ["SessionBuilder", "SessionCipher", "make_pre_key_bundle"]


class SessionBuilder:
    """Start sessions with ``remote_address`` from its bundles (libsignal's ``SessionBuilder``).

    ``limits`` apply to a record made here (a stored one keeps the limits its store reads it with).
    ``pq_ratchet_factory`` (for instance :class:`e2e.spqr.SpqrRatchetFactory`) starts the
    post-quantum ratchet of a version-4 session, for a record that has no factory of its own.
    """

    __slots__ = ("_store", "remote_address", "limits", "pq_ratchet_factory")

    def __init__(
        self,
        store: ProtocolStore,
        remote_address: ProtocolAddress,
        *,
        limits: Limits = DEFAULT_LIMITS,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> None:
        if not isinstance(remote_address, ProtocolAddress):
            raise TypeError("the remote address is a ProtocolAddress")
        self._store = store
        self.remote_address = remote_address
        self.limits = limits
        self.pq_ratchet_factory = pq_ratchet_factory

    def process_pre_key_bundle(
        self,
        their_bundle: PreKeyBundle,
        rng: Rng,
        *,
        trace: Trace | None = None,
        allow_downgrade: bool = False,
    ) -> None:
        """Alice: verify ``their_bundle``, check its identity key is trusted, start a state
        (X3DH, or PQXDH when the bundle has a KEM prekey), record the identity, save the record.

        Raises :class:`~e2e.errors.InvalidSignatureError`, :class:`~e2e.errors.UntrustedIdentityError`
        or :class:`~e2e.errors.DowngradeError` (see :meth:`SessionRecord.start_session
        <e2e.session.SessionRecord.start_session>` for ``allow_downgrade``) with nothing stored.
        The next :meth:`SessionCipher.encrypt` makes a PreKeySignalMessage.
        """
        store, address = self._store, self.remote_address
        # The signatures first: a bundle is the relay's word until its identity key vouches for it.
        their_bundle.verify()
        store.check_trusted_identity(address, their_bundle.identity_key, Direction.SENDING)
        record = _with_factory(store.load_session(address), self.limits, self.pq_ratchet_factory)
        record.start_session(
            store.get_identity_key_pair(),
            store.get_local_registration_id(),
            their_bundle,
            rng,
            trace,
            allow_downgrade=allow_downgrade,
        )
        store.save_identity(address, their_bundle.identity_key)
        store.store_session(address, record)


class SessionCipher:
    """Encrypt to and decrypt from one remote device over a store (libsignal's ``SessionCipher``).

    ``require_pqxdh`` refuses PreKey messages made with X3DH
    (:class:`~e2e.errors.DowngradeError`); ``limits`` apply to a record made here;
    ``pq_ratchet_factory`` starts the post-quantum ratchet of a version-4 session that a PreKey
    message starts (as for :class:`SessionBuilder`).
    """

    __slots__ = ("_store", "remote_address", "limits", "require_pqxdh", "pq_ratchet_factory")

    def __init__(
        self,
        store: ProtocolStore,
        remote_address: ProtocolAddress,
        *,
        limits: Limits = DEFAULT_LIMITS,
        require_pqxdh: bool = False,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> None:
        if not isinstance(remote_address, ProtocolAddress):
            raise TypeError("the remote address is a ProtocolAddress")
        self._store = store
        self.remote_address = remote_address
        self.limits = limits
        self.require_pqxdh = require_pqxdh
        self.pq_ratchet_factory = pq_ratchet_factory

    def has_session(self) -> bool:
        """Whether there is a current state to encrypt with."""
        record = self._store.load_session(self.remote_address)
        return record is not None and record.has_current_state()

    def encrypt(self, plaintext: bytes, rng: Rng, *, trace: Trace | None = None) -> Ciphertext:
        """Encrypt ``plaintext`` with the current state and save the record.

        A ``PREKEY`` message until a reply has been decrypted, ``WHISPER`` after.  Raises
        :class:`~e2e.errors.NoSessionError` without a session and
        :class:`~e2e.errors.UntrustedIdentityError` when the session's identity key is no longer
        trusted, with nothing stored.
        """
        store, address = self._store, self.remote_address
        record = store.load_session(address)
        if record is None or not record.has_current_state():
            raise NoSessionError(f"no session with {address} to encrypt with")
        their_identity_key = record.their_identity_key
        assert their_identity_key is not None
        store.check_trusted_identity(address, their_identity_key, Direction.SENDING)
        ciphertext = record.encrypt(plaintext, rng, trace)
        store.store_session(address, record)
        return ciphertext

    def decrypt(
        self,
        message: bytes | Ciphertext,
        message_type: MessageType | int | None = None,
        *,
        trace: Trace | None = None,
    ) -> bytes:
        """Decrypt one message from the remote device: wire bytes with libsignal's type number
        (``message_type``, required with bytes), or a :class:`~e2e.session.Ciphertext`.

        An unknown type number raises :class:`~e2e.errors.DecodeError`; bytes without a type raise
        :class:`TypeError` (the type is never guessed).  Every other failure is typed too (module
        docstring), and leaves every store exactly as it was.
        """
        body, kind = _parts(message, message_type)
        if kind is MessageType.PREKEY:
            return self._decrypt_prekey(body, trace)
        return self._decrypt_signal(body, trace)

    def _decrypt_prekey(self, body: bytes, trace: Trace | None) -> bytes:
        store, address = self._store, self.remote_address
        message = PreKeySignalMessage.deserialize(body)
        store.check_trusted_identity(address, message.identity_key, Direction.RECEIVING)
        record = _with_factory(store.load_session(address), self.limits, self.pq_ratchet_factory)
        signed: KeyPair | None = None
        one_time: PreKeyRecord | None = None
        kem: KemPreKeyRecord | KyberPreKeyRecord | None = None
        if not record.has_state_for_base_key(message.base_key):
            # A new session: X3DH §3.4 (PQXDH §3.4) needs the prekeys the message names.  A repeated
            # PreKey message (known base key) is decrypted by its state and needs none of them.
            signed_record = store.load_signed_pre_key(message.signed_pre_key_id)
            if signed_record is None:
                raise UnknownPreKeyError("signed prekey", message.signed_pre_key_id)
            signed = signed_record.key_pair
            if message.pre_key_id is not None:
                one_time = store.load_pre_key(message.pre_key_id)
                if one_time is None:
                    raise UnknownPreKeyError("one-time prekey", message.pre_key_id)
            if message.kem_pre_key_id is not None and message.version == CIPHERTEXT_VERSION_V4:
                # Signal's PQXDH: the id names one of our Kyber1024 prekeys.
                kem = store.load_kyber_pre_key(message.kem_pre_key_id)
                if kem is None:
                    raise UnknownPreKeyError("Kyber prekey", message.kem_pre_key_id)
            elif message.kem_pre_key_id is not None:
                kem = store.load_kem_pre_key(message.kem_pre_key_id)
                if kem is None:
                    raise UnknownPreKeyError("KEM prekey", message.kem_pre_key_id)
        plaintext = record.decrypt_prekey_message(
            message,
            store.get_identity_key_pair(),
            signed,
            None if one_time is None else one_time.key_pair,
            trace=trace,
            our_registration_id=store.get_local_registration_id(),
            our_kem_pre_key=None if kem is None else kem.key_pair,
            require_pqxdh=self.require_pqxdh,
        )
        # Decrypted: now, and only now, the writes.
        store.save_identity(address, message.identity_key)
        if one_time is not None:
            store.remove_pre_key(one_time.id)
        if isinstance(kem, KyberPreKeyRecord) and not kem.last_resort:
            store.remove_kyber_pre_key(kem.id)
        elif kem is not None and not kem.last_resort:
            store.remove_kem_pre_key(kem.id)
        store.store_session(address, record)
        return plaintext

    def _decrypt_signal(self, body: bytes, trace: Trace | None) -> bytes:
        store, address = self._store, self.remote_address
        record = store.load_session(address)
        if record is None:
            raise NoSessionError(f"no session with {address}")
        if not _all_trusted(store, address, record):
            # Some state belongs to an identity no longer trusted: decrypt a copy, and keep it only
            # if the state that decrypted is a trusted one.
            copy = SessionRecord.deserialize(record.serialize(), record.limits)
            plaintext = copy.decrypt(body, trace=trace)
            their_identity_key = copy.their_identity_key
            assert their_identity_key is not None
            store.check_trusted_identity(address, their_identity_key, Direction.RECEIVING)
            record = copy
        else:
            plaintext = record.decrypt(body, trace=trace)
            their_identity_key = record.their_identity_key
            assert their_identity_key is not None
        store.save_identity(address, their_identity_key)
        store.store_session(address, record)
        return plaintext


def _parts(message: bytes | Ciphertext, message_type: MessageType | int | None) -> tuple[bytes, MessageType]:
    """The body and the explicit type of a message given as a Ciphertext or as bytes and a type."""
    if isinstance(message, Ciphertext):
        if message_type is not None and message_type != message.type:
            raise ValueError(f"the Ciphertext is of type {message.type}, not {message_type}")
        body, message_type = message.body, message.type
    elif isinstance(message, bytes):
        body = message
    else:
        raise TypeError(f"decrypt takes bytes or a Ciphertext, not {type(message).__name__}")
    if message_type is None:
        raise TypeError(
            "decrypting bytes needs their message type (2 WHISPER, 3 PREKEY); it is never guessed"
        )
    if not isinstance(message_type, int) or isinstance(message_type, bool):
        raise TypeError(f"a message type is an int, not {type(message_type).__name__}")
    try:
        return body, MessageType(message_type)
    except ValueError:
        raise DecodeError(f"unknown message type {message_type}") from None


def _with_factory(
    record: SessionRecord | None, limits: Limits, pq_ratchet_factory: PostQuantumRatchetFactory | None
) -> SessionRecord:
    """The stored record, or a new one; either way with a post-quantum ratchet factory if one was given.

    A stored record keeps the factory its store loaded it with; one loaded without gets the
    cipher's, which only changes how the record's *new* version-4 states start.
    """
    if record is None:
        return SessionRecord(limits, pq_ratchet_factory)
    if record.pq_ratchet_factory is None:
        record.pq_ratchet_factory = pq_ratchet_factory
    return record


def _all_trusted(store: ProtocolStore, address: ProtocolAddress, record: SessionRecord) -> bool:
    """Whether the store trusts every identity key the record's states were made with."""
    keys: list[PublicKey] = []
    for state in [record.current_state, *record.archived_states]:
        if state is not None and state.remote_identity_key not in keys:
            keys.append(state.remote_identity_key)
    for key in keys:
        try:
            store.check_trusted_identity(address, key, Direction.RECEIVING)
        except UntrustedIdentityError:
            return False
    return True


def make_pre_key_bundle(
    store: ProtocolStore,
    device_id: int,
    *,
    signed_pre_key_id: int,
    pre_key_id: int | None = None,
    kem_pre_key_id: int | None = None,
    kyber_pre_key_id: int | None = None,
) -> PreKeyBundle:
    """The bundle (X3DH §3.2, PQXDH §3.2) that publishes the named prekeys of ``store``: an
    ML-KEM prekey (``kem_pre_key_id``, the project's PQXDH) or a Kyber1024 one
    (``kyber_pre_key_id``, Signal's PQXDH and a version-4 session), not both.

    A prekey the store does not hold raises :class:`~e2e.errors.UnknownPreKeyError`.
    """
    if kem_pre_key_id is not None and kyber_pre_key_id is not None:
        raise ValueError("a bundle carries one KEM prekey: ML-KEM or Kyber, not both")
    identity = store.get_identity_key_pair()
    signed = store.load_signed_pre_key(signed_pre_key_id)
    if signed is None:
        raise UnknownPreKeyError("signed prekey", signed_pre_key_id)
    one_time = None if pre_key_id is None else store.load_pre_key(pre_key_id)
    if pre_key_id is not None and one_time is None:
        raise UnknownPreKeyError("one-time prekey", pre_key_id)
    kem: KemPreKeyRecord | KyberPreKeyRecord | None = None
    if kem_pre_key_id is not None:
        kem = store.load_kem_pre_key(kem_pre_key_id)
        if kem is None:
            raise UnknownPreKeyError("KEM prekey", kem_pre_key_id)
    if kyber_pre_key_id is not None:
        kem = store.load_kyber_pre_key(kyber_pre_key_id)
        if kem is None:
            raise UnknownPreKeyError("Kyber prekey", kyber_pre_key_id)
    return PreKeyBundle(
        registration_id=store.get_local_registration_id(),
        device_id=device_id,
        identity_key=identity.public_key,
        signed_pre_key_id=signed.id,
        signed_pre_key=signed.key_pair.public_key,
        signed_pre_key_signature=signed.signature,
        pre_key_id=None if one_time is None else one_time.id,
        pre_key=None if one_time is None else one_time.key_pair.public_key,
        kem_pre_key_id=None if kem is None else kem.id,
        kem_pre_key=None if kem is None else kem.key_pair.public_key,
        kem_pre_key_signature=None if kem is None else kem.signature,
    )
