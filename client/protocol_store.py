"""The client's SQLite store as the protocol core's store interfaces (:mod:`e2e.stores`).

What this module owns
---------------------
:class:`SqliteProtocolStore`, the adapter that lets :class:`e2e.session_cipher.SessionCipher` and
:class:`~e2e.session_cipher.SessionBuilder` run over :class:`client.store.Store`:

* our identity key pair and registration id (from the account row, read once by the client);
* trust decisions from the ``contacts`` table.  Trust is per *account*: the contact row holds the
  account's primary identity key (the one its safety number covers), and the address's name selects
  it.  A linked companion has a key of its own, trusted exactly as the account's verified device
  list names it (:attr:`SqliteProtocolStore.device_keys`, filled by :mod:`client.fanout`); once an
  account has a list, a device missing from it is not trusted.  The first primary key seen is
  trusted (trust on first use); a different one raises
  :class:`~e2e.errors.UntrustedIdentityError`, and the client holds the message and asks the user
  (:meth:`client.Client.accept_identity`);
* one-time, signed and KEM prekeys from their tables, parsed with :mod:`e2e.records`;
* session records from the ``sessions`` table, with an in-memory cache of parsed records.

Invariants
----------
* Every write goes through :class:`client.store.Store`, whose ``transaction()`` nests: the client
  runs each cipher call inside the one transaction that also records the plaintext, the processed
  id or the outbox entry, so the session state and its effects are committed together or not at
  all (docs/client.md, "Crash safety").
* The trusted identity key of each account seen is cached too (it is read for every message).
  The client changes a trusted key only through :meth:`client.Client.accept_identity`, which
  removes the account's sessions here (:meth:`SqliteProtocolStore.remove_sessions`) and so
  forgets the account's cached entries.
* The cache hands out the record it keeps.  The cipher changes a record only by methods that
  commit on success, so a failed call leaves it as it was; when a transaction around a successful
  call rolls back, the client drops the cached records (:meth:`SqliteProtocolStore.forget`), so
  memory never runs ahead of the file.
* A stored record that does not parse is the local file's fault, not the message's: it raises
  :class:`client.store.StoreFormatError`, which stops the client, never a core error that would
  quarantine an innocent message.

What it does not know
---------------------
SQL (that is :mod:`client.store`), the network, and when prekeys are made or uploaded
(:mod:`client.prekeys`).  The clock comes in as ``now_ms``, for a contact's first-seen time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from client.store import KEM_KYBER, KEM_MLKEM, Store, StoreFormatError
from e2e.address import ProtocolAddress
from e2e.errors import E2EError, UntrustedIdentityError
from e2e.keys import KeyPair, PublicKey
from e2e.pq_ratchet import PostQuantumRatchetFactory
from e2e.ratchet import Limits
from e2e.records import (
    KYBER_PRE_KEY_KIND,
    KemPreKeyRecord,
    KyberPreKeyRecord,
    PreKeyRecord,
    SignedPreKeyRecord,
)
from e2e.session import SessionRecord
from e2e.spqr import SpqrRatchetFactory
from e2e.stores import Direction

__all__ = ["SqliteProtocolStore", "from_store"]

_Parsed = TypeVar("_Parsed")


def from_store(parse: Callable[[bytes], _Parsed], data: bytes) -> _Parsed:
    """Parse a record read from our own store; a failure is :class:`StoreFormatError`."""
    try:
        return parse(data)
    except E2EError as error:
        raise StoreFormatError(f"a record in the local store does not parse: {error}") from error


class SqliteProtocolStore:
    """:class:`client.store.Store` as an :class:`e2e.stores.ProtocolStore` (module docstring)."""

    def __init__(
        self,
        store: Store,
        identity_key_pair: KeyPair,
        registration_id: int,
        *,
        now_ms: Callable[[], int],
        limits: Limits,
        pq_ratchet_factory: PostQuantumRatchetFactory | None = None,
    ) -> None:
        self._store = store
        self._identity_key_pair = identity_key_pair
        self._registration_id = registration_id
        self._now_ms = now_ms
        self._limits = limits
        # Version-4 sessions run SPQR (e2e.spqr), as libsignal requires; their stored state is part
        # of the session record, so it commits in the same transaction as the rest of it.
        self.pq_ratchet_factory = (
            pq_ratchet_factory if pq_ratchet_factory is not None else SpqrRatchetFactory()
        )
        self._parse_session = functools.partial(
            SessionRecord.deserialize, limits=limits, pq_ratchet_factory=self.pq_ratchet_factory
        )
        self._sessions: dict[ProtocolAddress, SessionRecord] = {}
        self._trusted: dict[str, bytes] = {}
        self.device_keys: dict[tuple[str, int], bytes] = {}
        """Identity keys of linked devices, from device lists verified under the account's trusted
        primary key (client/fanout.py).  A listed device is trusted with exactly its listed key;
        the account's contact row (its primary key, the one the safety number covers) is untouched."""
        self.listed_accounts: set[str] = set()
        """Accounts with a verified list: a device of theirs that is not listed is not trusted."""

    # -- identities ----------------------------------------------------------------------------

    def get_identity_key_pair(self) -> KeyPair:
        return self._identity_key_pair

    def get_local_registration_id(self) -> int:
        return self._registration_id

    def check_trusted_identity(
        self, address: ProtocolAddress, their_identity_key: PublicKey, direction: Direction
    ) -> None:
        """Trust on first use, per account (module docstring); linked devices by their list."""
        if self._listed_check(address, their_identity_key, direction):
            return
        trusted = self._trusted_key(address.name)
        if trusted is not None and trusted != their_identity_key.serialize():
            raise UntrustedIdentityError(
                f"{address} presents {their_identity_key.fingerprint()}, not the trusted key "
                f"({direction.value})",
                address=address,
                identity_key=their_identity_key,
            )

    def save_identity(self, address: ProtocolAddress, their_identity_key: PublicKey) -> bool:
        if self.device_keys.get((address.name, address.device_id)) == their_identity_key.serialize():
            return False
        trusted = self._trusted_key(address.name)
        key = their_identity_key.serialize()
        if trusted == key:
            return False
        if trusted is None:
            self._store.add_contact(address.name, key, self._now_ms())
        else:
            self._store.replace_identity(address.name, key, self._now_ms())
        self._trusted[address.name] = key
        return trusted is not None

    def get_identity(self, address: ProtocolAddress) -> PublicKey | None:
        listed = self.device_keys.get((address.name, address.device_id))
        if listed is not None:
            return from_store(PublicKey.deserialize, listed)
        trusted = self._trusted_key(address.name)
        return None if trusted is None else from_store(PublicKey.deserialize, trusted)

    def _listed_check(
        self, address: ProtocolAddress, their_identity_key: PublicKey, direction: Direction
    ) -> bool:
        """True when a device list decides: the key is the listed one.  Raises when the list says no."""
        listed = self.device_keys.get((address.name, address.device_id))
        if listed is None:
            if address.device_id != 1 and address.name in self.listed_accounts:
                raise UntrustedIdentityError(
                    f"{address} is not on {address.name}'s signed device list ({direction.value})",
                    address=address,
                    identity_key=their_identity_key,
                )
            return False
        if listed != their_identity_key.serialize():
            raise UntrustedIdentityError(
                f"{address} presents {their_identity_key.fingerprint()}, not the key its account's "
                f"signed device list names ({direction.value})",
                address=address,
                identity_key=their_identity_key,
            )
        return True

    def _trusted_key(self, name: str) -> bytes | None:
        trusted = self._trusted.get(name)
        if trusted is None:
            contact = self._store.contact(name)
            if contact is None:
                return None
            trusted = self._trusted[name] = contact.identity_key
        return trusted

    # -- prekeys -------------------------------------------------------------------------------

    def load_pre_key(self, pre_key_id: int) -> PreKeyRecord | None:
        data = self._store.pre_key(pre_key_id)
        return None if data is None else from_store(PreKeyRecord.deserialize, data)

    def store_pre_key(self, record: PreKeyRecord) -> None:
        self._store.add_pre_keys([(record.id, record.serialize())])

    def remove_pre_key(self, pre_key_id: int) -> None:
        self._store.remove_pre_key(pre_key_id)

    def load_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord | None:
        data = self._store.signed_pre_key(signed_pre_key_id)
        return None if data is None else from_store(SignedPreKeyRecord.deserialize, data)

    def store_signed_pre_key(self, record: SignedPreKeyRecord) -> None:
        self._store.add_signed_pre_key(record.id, record.serialize(), record.timestamp)

    def load_kem_pre_key(self, kem_pre_key_id: int) -> KemPreKeyRecord | None:
        found = self._store.kem_pre_key(kem_pre_key_id)
        if found is None or found[0][:1] == bytes((KYBER_PRE_KEY_KIND,)):
            # (A Kyber prekey of this id does not stand in for an ML-KEM one.)
            return None
        record = from_store(KemPreKeyRecord.deserialize, found[0])
        if record.last_resort != found[1]:
            raise StoreFormatError(
                f"KEM prekey {kem_pre_key_id}: the record and its row disagree on last resort"
            )
        return record

    def store_kem_pre_key(self, record: KemPreKeyRecord) -> None:
        self._store.add_kem_pre_keys(
            [(record.id, record.serialize(), record.last_resort)], record.timestamp, kem=KEM_MLKEM
        )

    def remove_kem_pre_key(self, kem_pre_key_id: int) -> None:
        self._store.remove_kem_pre_key(kem_pre_key_id)

    # Kyber1024 prekeys (version 4) share the table, told apart by its kem column and the record's
    # kind; their ids come from the same counter, so an id names one prekey of either kind.

    def load_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord | None:
        found = self._store.kem_pre_key(kyber_pre_key_id)
        if found is None or found[0][:1] != bytes((KYBER_PRE_KEY_KIND,)):
            return None
        record = from_store(KyberPreKeyRecord.deserialize, found[0])
        if record.last_resort != found[1]:
            raise StoreFormatError(
                f"Kyber prekey {kyber_pre_key_id}: the record and its row disagree on last resort"
            )
        return record

    def store_kyber_pre_key(self, record: KyberPreKeyRecord) -> None:
        self._store.add_kem_pre_keys(
            [(record.id, record.serialize(), record.last_resort)], record.timestamp, kem=KEM_KYBER
        )

    def remove_kyber_pre_key(self, kyber_pre_key_id: int) -> None:
        self._store.remove_kem_pre_key(kyber_pre_key_id)

    # -- sessions ------------------------------------------------------------------------------

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        record = self._sessions.get(address)
        if record is None:
            data = self._store.session(address.name, address.device_id)
            if data is None:
                return None
            record = self._sessions[address] = from_store(self._parse_session, data)
        return record

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self._store.put_session(address.name, address.device_id, record.serialize())
        self._sessions[address] = record

    def remove_sessions(self, name: str) -> None:
        """Delete every session with the devices of account ``name`` (a new identity was accepted)."""
        with self._store.transaction():
            for device_id in self._store.session_devices(name):
                self._store.remove_session(name, device_id)
        self.forget(name)

    def forget(self, name: str | None = None) -> None:
        """Drop cached records and trusted keys (of account ``name``, or all): after a rollback, or
        when they were changed or deleted."""
        if name is None:
            self._sessions.clear()
            self._trusted.clear()
        else:
            self._trusted.pop(name, None)
            for address in [address for address in self._sessions if address.name == name]:
                del self._sessions[address]

    def __repr__(self) -> str:
        return (
            f"SqliteProtocolStore(path={str(self._store.path)!r}, "
            f"identity_key={self._identity_key_pair.public_key!r}, cached_sessions={len(self._sessions)})"
        )
