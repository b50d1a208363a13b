"""The store interfaces a session cipher runs over, as typed protocols (libsignal's store traits).

What this module owns
---------------------
The contracts between :mod:`e2e.session_cipher` and whatever keeps a device's state:

* :class:`IdentityKeyStore`: our identity key pair and registration id, and the trust decisions on
  their identity keys, by :class:`~e2e.address.ProtocolAddress` (and :class:`Direction`);
* :class:`PreKeyStore`: one-time prekeys (X3DH's ``OPK_B``), deleted after their first use;
* :class:`SignedPreKeyStore`: signed prekeys (``SPK_B``), kept until the owner rotates them;
* :class:`KemPreKeyStore`: signed ML-KEM prekeys for the project's PQXDH (message version 3); a
  one-time one (``PQOPK_B``) is deleted after its first use, the last-resort one (``PQSPK_B``) is
  kept (PQXDH §3.4);
* :class:`KyberPreKeyStore`: signed Kyber1024 prekeys for Signal's PQXDH (message version 4,
  libsignal's ``KyberPreKeyStore``), kept and deleted the same way;
* :class:`SessionStore`: one :class:`~e2e.session.SessionRecord` per remote device;
* :class:`ProtocolStore`: all six, which is what :class:`~e2e.session_cipher.SessionCipher` takes.

The sender-key store for groups is :class:`e2e.group_cipher.SenderKeyStore`, keyed by a
:class:`~e2e.group_cipher.SenderKeyName` (the sender's name and device id, as in its
:class:`~e2e.address.ProtocolAddress`, and the distribution id); it is not part of
:class:`ProtocolStore`, so a store of 1:1 sessions need not implement it.
:mod:`e2e.memory_store` implements every protocol here in memory; the client's SQLite store
implements them over its tables (``client/protocol_store.py``).

The contract every implementation keeps
---------------------------------------
* The cipher does every read and every check first and every write last, only once a message
  has decrypted (or a bundle has been processed).  A store whose writes can fail halfway (a
  database) runs each cipher call inside one transaction of its own, so that all of the call's
  writes land or none does; an in-memory store needs nothing.
* ``load_session`` hands out a record that the cipher may change before it calls
  ``store_session``; the cipher changes it only by methods that commit on success, so a failed
  call leaves it as it was.  A store that keeps the object it hands out (a cache) must drop it
  when a transaction around the call rolls back.
* ``load_*`` return ``None`` for what the store does not hold; the cipher turns that into the
  typed :class:`~e2e.errors.UnknownPreKeyError` or :class:`~e2e.errors.NoSessionError`.
* Trust is a policy of the store: :meth:`IdentityKeyStore.check_trusted_identity` raises
  :class:`~e2e.errors.UntrustedIdentityError` for a key it does not trust (the reference policy is
  trust on first use: the first key seen for an address is trusted, any other is refused until
  the application calls :meth:`~IdentityKeyStore.save_identity` with it).

What this module does not know
------------------------------
How anything is stored, serialized or cached, and whether calls take a lock: every method is
synchronous and the core stays sans-I/O; an asynchronous application calls the cipher from one
task per remote device, or under a lock per address, as ``client/`` does.
"""

from __future__ import annotations

import enum
from typing import Protocol

from e2e.address import ProtocolAddress
from e2e.keys import KeyPair, PublicKey
from e2e.records import KemPreKeyRecord, KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from e2e.session import SessionRecord

__all__ = [
    "Direction",
    "IdentityKeyStore",
    "PreKeyStore",
    "SignedPreKeyStore",
    "KemPreKeyStore",
    "KyberPreKeyStore",
    "SessionStore",
    "ProtocolStore",
]


class Direction(enum.Enum):
    """Whether a trust decision is about a key we are about to encrypt to or one we received."""

    SENDING = "sending"
    RECEIVING = "receiving"


class IdentityKeyStore(Protocol):
    """Our identity and the identity keys we trust for remote devices."""

    def get_identity_key_pair(self) -> KeyPair:
        """Our identity key pair (``IK``)."""
        ...

    def get_local_registration_id(self) -> int:
        """Our registration id (an unsigned 32-bit value, given when the store was made)."""
        ...

    def check_trusted_identity(
        self, address: ProtocolAddress, their_identity_key: PublicKey, direction: Direction
    ) -> None:
        """Raise :class:`~e2e.errors.UntrustedIdentityError` unless ``their_identity_key`` is
        trusted for ``address``; return ``None`` when it is.  Changes nothing.
        """
        ...

    def save_identity(self, address: ProtocolAddress, their_identity_key: PublicKey) -> bool:
        """Record ``their_identity_key`` as trusted for ``address``; ``True`` if it replaced a
        different key (the cipher calls it only after :meth:`check_trusted_identity` passed).
        """
        ...

    def get_identity(self, address: ProtocolAddress) -> PublicKey | None:
        """The identity key recorded for ``address``, or ``None``."""
        ...


class PreKeyStore(Protocol):
    """Our one-time prekeys, by id."""

    def load_pre_key(self, pre_key_id: int) -> PreKeyRecord | None:
        """The one-time prekey ``pre_key_id``, or ``None`` (never made, or already used)."""
        ...

    def store_pre_key(self, record: PreKeyRecord) -> None:
        """Keep ``record`` (replacing one with the same id)."""
        ...

    def remove_pre_key(self, pre_key_id: int) -> None:
        """Delete the one-time prekey ``pre_key_id`` (no error if it is gone already)."""
        ...


class SignedPreKeyStore(Protocol):
    """Our signed prekeys, by id: the current one and those kept for late messages."""

    def load_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord | None:
        """The signed prekey ``signed_pre_key_id``, or ``None``."""
        ...

    def store_signed_pre_key(self, record: SignedPreKeyRecord) -> None:
        """Keep ``record`` (replacing one with the same id)."""
        ...


class KemPreKeyStore(Protocol):
    """Our signed ML-KEM prekeys, by id: one-time ones and last-resort ones (``record.last_resort``)."""

    def load_kem_pre_key(self, kem_pre_key_id: int) -> KemPreKeyRecord | None:
        """The KEM prekey ``kem_pre_key_id``, or ``None``."""
        ...

    def store_kem_pre_key(self, record: KemPreKeyRecord) -> None:
        """Keep ``record`` (replacing one with the same id)."""
        ...

    def remove_kem_pre_key(self, kem_pre_key_id: int) -> None:
        """Delete a used one-time KEM prekey (the cipher never asks this for a last-resort one)."""
        ...


class KyberPreKeyStore(Protocol):
    """Our signed Kyber1024 prekeys, by id: one-time ones and last-resort ones (``record.last_resort``).

    Their ids are a space of their own, as libsignal keeps them.
    """

    def load_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord | None:
        """The Kyber prekey ``kyber_pre_key_id``, or ``None``."""
        ...

    def store_kyber_pre_key(self, record: KyberPreKeyRecord) -> None:
        """Keep ``record`` (replacing one with the same id)."""
        ...

    def remove_kyber_pre_key(self, kyber_pre_key_id: int) -> None:
        """Delete a used one-time Kyber prekey (the cipher never asks this for a last-resort one)."""
        ...


class SessionStore(Protocol):
    """One session record per remote device."""

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        """The record for ``address``, or ``None``; the caller may change it (module docstring)."""
        ...

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        """Keep ``record`` as the record for ``address``."""
        ...


class ProtocolStore(
    IdentityKeyStore,
    PreKeyStore,
    SignedPreKeyStore,
    KemPreKeyStore,
    KyberPreKeyStore,
    SessionStore,
    Protocol,
):
    """Everything :class:`~e2e.session_cipher.SessionCipher` and ``SessionBuilder`` use."""
