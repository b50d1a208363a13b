"""A device's prekeys: made, stored, published, topped up and rotated.

What this module owns
---------------------
:class:`PreKeys`, the part of a client that keeps the relay stocked with what others need to start
sessions with this device (X3DH §3.2, PQXDH §3.2):

* the signed prekey ``SPK`` and, with PQXDH, the last-resort KEM prekeys ``PQSPK`` (one ML-KEM-1024
  for the project's PQXDH, one Kyber1024 for Signal's, message version 4), rotated together; a
  retired one stays in the store for a grace period, so that PreKey messages built on it that are
  still in flight decrypt;
* one-time prekeys ``OPK`` and one-time KEM prekeys ``PQOPK`` of each KEM, topped up when the
  relay's stock runs low.  Kyber and ML-KEM prekeys share one space of ids (the core's KEM prekey
  store is keyed by id alone) and are told apart by the store's ``kem`` column.

Invariants
----------
* Every key is committed to the store before it is uploaded, and marked uploaded only after the
  relay accepted it, so no key the relay hands out is missing here.  A crash in between uploads
  the same batch again; the relay stores an upload all or nothing and refuses the repeat with
  ``key_id_conflict``, which therefore means "already done" (:func:`_upload`).
* Ids come from counters in the store and wrap below libsignal's 24-bit limit, so an id is never
  handed out twice while its key may still be in use.
* Private keys exist only in memory and in the store, in the core's versioned record formats.

What it does not know
---------------------
When to run: the client calls :meth:`PreKeys.check` on every connection and when the relay says
the stock is low.  Deleting used one-time prekeys is the receive path's business (it does so in
the transaction that commits the new session).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from client import transport
from client.settings import Settings
from client.store import KEM_KYBER, KEM_MLKEM, Store
from e2e import records
from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, Rng
from e2e.kyber import KyberKeyPair

__all__ = ["PreKeys"]

logger = logging.getLogger("client")

_MAX_PRE_KEY_ID = 0xFFFFFF
"""libsignal's prekey ids are 24-bit (``Medium.MAX_VALUE``); ours wrap around below it."""


class PreKeys:
    """The prekeys of the device whose store, identity key and settings are given."""

    def __init__(
        self,
        store: Store,
        identity_key: KeyPair,
        settings: Settings,
        rng: Rng,
        now_ms: Callable[[], int],
        name: str,
    ) -> None:
        self._store = store
        self._identity_key = identity_key
        self._settings = settings
        self._rng = rng
        self._now_ms = now_ms
        self._name = name

    def new_signed_pre_key(self) -> int:
        """A new signed prekey (and, with PQXDH, a new last-resort KEM prekey), stored, not uploaded."""
        now = self._now_ms()
        signed_pre_key_id = self._next_key_id("signed_pre_key")
        key_pair = KeyPair.generate(self._rng)
        signature = self._identity_key.sign(key_pair.public_key.serialize(), self._rng)
        record = records.SignedPreKeyRecord(signed_pre_key_id, key_pair, signature, now)
        self._store.add_signed_pre_key(signed_pre_key_id, record.serialize(), now)
        for kem in self._kems():
            self.new_kem_pre_keys(1, last_resort=True, kem=kem)
        return signed_pre_key_id

    def _kems(self) -> list[str]:
        """The KEMs whose prekeys this device publishes (settings)."""
        kems = []
        if self._settings.publish_kem_pre_keys:
            kems.append(KEM_MLKEM)
        if self._settings.publish_kyber_pre_keys:
            kems.append(KEM_KYBER)
        return kems

    def new_kem_pre_keys(self, count: int, *, last_resort: bool, kem: str = KEM_MLKEM) -> None:
        """Signed KEM prekeys (PQXDH §3.2: ``Sig(IK_B, EncodeKEM(PQPK_B))``), stored, not uploaded:
        ML-KEM-1024 (``kem="mlkem"``) or Kyber1024 (``kem="kyber"``)."""
        now = self._now_ms()
        new = []
        for _ in range(count):
            key_id = self._next_key_id("kem_pre_key")
            record: records.KemPreKeyRecord | records.KyberPreKeyRecord
            if kem == KEM_KYBER:
                kyber = KyberKeyPair.generate(self._rng)
                signature = self._identity_key.sign(kyber.public_key.serialize(), self._rng)
                record = records.KyberPreKeyRecord(key_id, kyber, signature, now, last_resort)
            else:
                mlkem = KemKeyPair.generate(self._rng)
                signature = self._identity_key.sign(mlkem.public_key.serialize(), self._rng)
                record = records.KemPreKeyRecord(key_id, mlkem, signature, now, last_resort)
            new.append((key_id, record.serialize(), last_resort))
        self._store.add_kem_pre_keys(new, now, kem=kem)

    async def upload_signed(self, connection: transport.Connection) -> None:
        """Upload the current signed prekey and last-resort KEM prekey if the relay lacks them.

        Once the relay has a new one, the previous one is retired: it stays in the store for
        ``settings.signed_pre_key_grace`` (for PreKey messages still in flight), then goes.
        """
        current = self._store.current_signed_pre_key()
        if current is None:
            self.new_signed_pre_key()
            current = self._store.current_signed_pre_key()
            assert current is not None
        signed_pre_key_id, data, _created, uploaded = current
        grace = int(self._settings.signed_pre_key_grace * 1000)
        if not uploaded:
            record = records.SignedPreKeyRecord.deserialize(data)
            await _upload(
                connection, signed_pre_key=(record.id, record.key_pair.public_key, record.signature)
            )
            now = self._now_ms()
            self._store.mark_signed_pre_key_uploaded(signed_pre_key_id, now)
            self._store.remove_signed_pre_keys_retired_before(now - grace)
        for kem in self._kems():
            last_resort = self._store.current_kem_last_resort(kem=kem)
            if last_resort is None:
                self.new_kem_pre_keys(1, last_resort=True, kem=kem)
                last_resort = self._store.current_kem_last_resort(kem=kem)
                assert last_resort is not None
            kem_pre_key_id, uploaded = last_resort
            if not uploaded:
                found = self._store.kem_pre_key(kem_pre_key_id)
                assert found is not None
                kem_record = _kem_record(found[0])
                entry = (kem_record.id, kem_record.key_pair.public_key.serialize(), kem_record.signature)
                if kem == KEM_KYBER:
                    await _upload(connection, kyber_last_resort=entry)
                else:
                    await _upload(connection, kem_last_resort=entry)
                now = self._now_ms()
                self._store.mark_kem_pre_keys_uploaded([kem_pre_key_id], now)
                self._store.remove_kem_pre_keys_retired_before(now - grace)

    async def rotate(self, connection: transport.Connection) -> int:
        """Make and upload a new signed prekey (and last-resort KEM prekey); returns its id."""
        signed_pre_key_id = self.new_signed_pre_key()
        await self.upload_signed(connection)
        return signed_pre_key_id

    async def upload_pending(self, connection: transport.Connection) -> int:
        """Upload the one-time prekeys (EC and KEM) that were generated but not yet accepted."""
        batch_size = self._settings.pre_key_batch
        pending = self._store.pending_pre_keys()
        for start in range(0, len(pending), batch_size):
            batch = [
                records.PreKeyRecord.deserialize(data) for _id, data in pending[start : start + batch_size]
            ]
            await _upload(connection, one_time_pre_keys=[(r.id, r.key_pair.public_key) for r in batch])
            self._store.mark_pre_keys_uploaded([r.id for r in batch])
        uploaded = len(pending)
        for kem, field in ((KEM_MLKEM, "kem_pre_keys"), (KEM_KYBER, "kyber_pre_keys")):
            pending_kem = self._store.pending_kem_pre_keys(last_resort=False, kem=kem)
            for start in range(0, len(pending_kem), batch_size):
                kem_batch = [_kem_record(data) for _id, data in pending_kem[start : start + batch_size]]
                entries = [(r.id, r.key_pair.public_key.serialize(), r.signature) for r in kem_batch]
                await _upload(connection, **{field: entries})
                self._store.mark_kem_pre_keys_uploaded([r.id for r in kem_batch], self._now_ms())
            uploaded += len(pending_kem)
        return uploaded

    async def replenish(self, connection: transport.Connection, top_up: bool) -> int:
        """Upload what is pending; then refill each kind of one-time prekey the relay is short of.

        A kind is refilled to its target when the relay holds fewer than its low-water mark, or
        fewer than the target itself when ``top_up`` (the relay said the stock is low, or the
        application asked).  Returns how many keys were uploaded.
        """
        settings = self._settings
        uploaded = await self.upload_pending(connection)
        counts = await connection.prekey_counts()
        threshold = settings.pre_key_target if top_up else settings.pre_key_low_water
        if counts.pre_keys < threshold:
            new = []
            for _ in range(settings.pre_key_target - counts.pre_keys):
                pre_key_id = self._next_key_id("pre_key")
                record = records.PreKeyRecord(pre_key_id, KeyPair.generate(self._rng))
                new.append((pre_key_id, record.serialize()))
            self._store.add_pre_keys(new)
        kem_threshold = settings.kem_pre_key_target if top_up else settings.kem_pre_key_low_water
        if settings.publish_kem_pre_keys and counts.kem_pre_keys < kem_threshold:
            self.new_kem_pre_keys(settings.kem_pre_key_target - counts.kem_pre_keys, last_resort=False)
        kyber_threshold = settings.kyber_pre_key_target if top_up else settings.kyber_pre_key_low_water
        if settings.publish_kyber_pre_keys and counts.kyber_pre_keys < kyber_threshold:
            self.new_kem_pre_keys(
                settings.kyber_pre_key_target - counts.kyber_pre_keys, last_resort=False, kem=KEM_KYBER
            )
        uploaded += await self.upload_pending(connection)
        if uploaded:
            logger.info(
                "%s: uploaded %d prekeys (the relay had %d one-time, %d ML-KEM and %d Kyber prekeys)",
                self._name,
                uploaded,
                counts.pre_keys,
                counts.kem_pre_keys,
                counts.kyber_pre_keys,
            )
        return uploaded

    def _next_key_id(self, counter: str) -> int:
        """The next id from a store counter, wrapping below libsignal's 24-bit limit."""
        return (self._store.next_id(counter) - 1) % (_MAX_PRE_KEY_ID - 1) + 1

    async def check(self, connection: transport.Connection, top_up: bool) -> None:
        """Upload what the relay lacks, rotate an old signed prekey, top up the one-time prekeys."""
        await self.upload_signed(connection)
        current = self._store.current_signed_pre_key()
        assert current is not None
        if self._now_ms() - current[2] > self._settings.signed_pre_key_max_age * 1000:
            await self.rotate(connection)
        await self.replenish(connection, top_up)


def _kem_record(data: bytes) -> records.KemPreKeyRecord | records.KyberPreKeyRecord:
    """A stored KEM prekey of either kind (its record kind byte says which)."""
    if data[:1] == bytes((records.KYBER_PRE_KEY_KIND,)):
        return records.KyberPreKeyRecord.deserialize(data)
    return records.KemPreKeyRecord.deserialize(data)


async def _upload(connection: transport.Connection, **keys: Any) -> None:
    """One prekey upload, which the relay stores all or nothing.

    Keys are committed to our store before they are uploaded and marked uploaded after the relay
    answered, so a crash (or a close) in between uploads the same batch again.  Its ids are then
    already taken, by this very batch: the relay refuses the repeat with ``key_id_conflict``,
    which here means the upload had succeeded.
    """
    try:
        await connection.upload_prekeys(**keys)
    except transport.RelayError as error:
        if error.code != "key_id_conflict":
            raise
        logger.info("the relay already held this upload of prekeys (%s)", ", ".join(sorted(keys)))
