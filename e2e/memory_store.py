"""The reference implementation of every store protocol of :mod:`e2e.stores`, in memory.

What this module owns
---------------------
:class:`InMemoryProtocolStore`: one device's identity, prekeys, KEM prekeys, trusted identities
and sessions in dictionaries, for tests, vectors, interop peers and outside harnesses.  It is the
executable form of the contract in :mod:`e2e.stores`.

Invariants
----------
* Sessions are kept as the bytes of :meth:`~e2e.session.SessionRecord.serialize` and read back
  with :meth:`~e2e.session.SessionRecord.deserialize`: a loaded record is the caller's own copy,
  so a call that fails before ``store_session`` leaves the store exactly as it was, and the
  storage format is exercised on every message.  Key records are frozen and kept as they are.
* Trust on first use, per address: the first identity key saved for an address is trusted, a
  different one raises :class:`~e2e.errors.UntrustedIdentityError` until the application saves it
  (:meth:`InMemoryProtocolStore.save_identity`, after the user compared safety numbers).
* The registration id is required and checked (an unsigned 32-bit integer): it never defaults.
* ``repr`` shows our public identity key and counts, never a private key or a session.

What it does not know
---------------------
Durability and transactions: nothing here survives the process, and nothing here can fail
halfway, so it needs no transactions.
"""

from __future__ import annotations

from typing import Final

from e2e.address import ProtocolAddress
from e2e.errors import UntrustedIdentityError
from e2e.keys import KeyPair, PublicKey
from e2e.pq_ratchet import PostQuantumRatchetFactory
from e2e.ratchet import DEFAULT_LIMITS, Limits
from e2e.records import KemPreKeyRecord, KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from e2e.session import SessionRecord
from e2e.stores import Direction

__all__ = ["InMemoryProtocolStore"]

_UINT32_MAX: Final = 0xFFFF_FFFF


class InMemoryProtocolStore:
    """One device's :class:`~e2e.stores.ProtocolStore`, in memory (module docstring)."""

    def __init__(
        self,
        identity_key_pair: KeyPair,
        registration_id: int,
        *,
        limits: Limits = DEFAULT_LIMITS,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> None:
        if not isinstance(identity_key_pair, KeyPair):
            raise TypeError("the identity key pair is a KeyPair")
        if (
            not isinstance(registration_id, int)
            or isinstance(registration_id, bool)
            or not 0 <= registration_id <= _UINT32_MAX
        ):
            raise ValueError("a registration id is an integer between 0 and 2**32 - 1")
        self._identity_key_pair = identity_key_pair
        self._registration_id = registration_id
        self.limits = limits
        # Loads the post-quantum ratchets (SPQR) of stored version-4 sessions (e2e.pq_ratchet).
        self.pq_ratchet_factory = pq_ratchet_factory
        self._identities: dict[ProtocolAddress, PublicKey] = {}
        self._pre_keys: dict[int, PreKeyRecord] = {}
        self._signed_pre_keys: dict[int, SignedPreKeyRecord] = {}
        self._kem_pre_keys: dict[int, KemPreKeyRecord] = {}
        self._kyber_pre_keys: dict[int, KyberPreKeyRecord] = {}
        self._sessions: dict[ProtocolAddress, bytes] = {}

    # -- identities ----------------------------------------------------------------------------

    def get_identity_key_pair(self) -> KeyPair:
        return self._identity_key_pair

    def get_local_registration_id(self) -> int:
        return self._registration_id

    def check_trusted_identity(
        self, address: ProtocolAddress, their_identity_key: PublicKey, direction: Direction
    ) -> None:
        """Trust on first use: refuse a key other than the one saved for ``address`` (either direction)."""
        known = self._identities.get(address)
        if known is not None and known != their_identity_key:
            raise UntrustedIdentityError(
                f"the identity key of {address} is {their_identity_key.fingerprint()}, "
                f"not the trusted {known.fingerprint()} ({direction.value})",
                address=address,
                identity_key=their_identity_key,
            )

    def save_identity(self, address: ProtocolAddress, their_identity_key: PublicKey) -> bool:
        known = self._identities.get(address)
        self._identities[address] = their_identity_key
        return known is not None and known != their_identity_key

    def get_identity(self, address: ProtocolAddress) -> PublicKey | None:
        return self._identities.get(address)

    def identity_addresses(self) -> list[ProtocolAddress]:
        """The addresses with a recorded identity key, sorted."""
        return sorted(self._identities)

    # -- prekeys -------------------------------------------------------------------------------

    def load_pre_key(self, pre_key_id: int) -> PreKeyRecord | None:
        return self._pre_keys.get(pre_key_id)

    def store_pre_key(self, record: PreKeyRecord) -> None:
        self._pre_keys[record.id] = record

    def remove_pre_key(self, pre_key_id: int) -> None:
        self._pre_keys.pop(pre_key_id, None)

    def pre_key_ids(self) -> list[int]:
        """The ids of the one-time prekeys held, sorted."""
        return sorted(self._pre_keys)

    def load_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord | None:
        return self._signed_pre_keys.get(signed_pre_key_id)

    def store_signed_pre_key(self, record: SignedPreKeyRecord) -> None:
        self._signed_pre_keys[record.id] = record

    def remove_signed_pre_key(self, signed_pre_key_id: int) -> None:
        """Delete a retired signed prekey (no error if it is gone already)."""
        self._signed_pre_keys.pop(signed_pre_key_id, None)

    def signed_pre_key_ids(self) -> list[int]:
        """The ids of the signed prekeys held, sorted."""
        return sorted(self._signed_pre_keys)

    def load_kem_pre_key(self, kem_pre_key_id: int) -> KemPreKeyRecord | None:
        return self._kem_pre_keys.get(kem_pre_key_id)

    def store_kem_pre_key(self, record: KemPreKeyRecord) -> None:
        self._kem_pre_keys[record.id] = record

    def remove_kem_pre_key(self, kem_pre_key_id: int) -> None:
        self._kem_pre_keys.pop(kem_pre_key_id, None)

    def kem_pre_key_ids(self) -> list[int]:
        """The ids of the KEM prekeys held (one-time and last-resort), sorted."""
        return sorted(self._kem_pre_keys)

    # -- Kyber prekeys (version 4) ---------------------------------------------------------------

    def load_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord | None:
        return self._kyber_pre_keys.get(kyber_pre_key_id)

    def store_kyber_pre_key(self, record: KyberPreKeyRecord) -> None:
        self._kyber_pre_keys[record.id] = record

    def remove_kyber_pre_key(self, kyber_pre_key_id: int) -> None:
        self._kyber_pre_keys.pop(kyber_pre_key_id, None)

    def kyber_pre_key_ids(self) -> list[int]:
        """The ids of the Kyber prekeys held, sorted."""
        return sorted(self._kyber_pre_keys)

    # -- sessions ------------------------------------------------------------------------------

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        data = self._sessions.get(address)
        return None if data is None else SessionRecord.deserialize(data, self.limits, self.pq_ratchet_factory)

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self._sessions[address] = record.serialize()

    def remove_session(self, address: ProtocolAddress) -> None:
        """Forget the session with ``address`` (no error if there is none)."""
        self._sessions.pop(address, None)

    def session_addresses(self) -> list[ProtocolAddress]:
        """The addresses with a stored session record, sorted."""
        return sorted(self._sessions)

    def __repr__(self) -> str:
        return (
            f"InMemoryProtocolStore(identity_key={self._identity_key_pair.public_key!r}, "
            f"registration_id={self._registration_id}, sessions={len(self._sessions)}, "
            f"pre_keys={len(self._pre_keys)}, signed_pre_keys={len(self._signed_pre_keys)}, "
            f"kem_pre_keys={len(self._kem_pre_keys)}, kyber_pre_keys={len(self._kyber_pre_keys)}, "
            f"identities={len(self._identities)})"
        )
