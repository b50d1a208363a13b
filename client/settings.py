"""The tunable numbers of a client, in one frozen record.

What this module owns
---------------------
:class:`Settings`: prekey stock and rotation, PQXDH, retention, reconnection and sending window.
Every number has a default that suits a demo; the tests use smaller ones.  Times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Tunable numbers; the defaults suit a demo and the tests."""

    pre_key_batch: int = 100
    """One-time prekeys per upload (the relay accepts at most 100 per request)."""
    pre_key_target: int = 100
    """How many unclaimed one-time prekeys the relay should hold after a top-up."""
    pre_key_low_water: int = 20
    """Top up when the relay holds fewer than this many."""
    publish_kem_pre_keys: bool = True
    """Publish signed ML-KEM-1024 prekeys, so that peers start sessions with PQXDH."""
    kem_pre_key_target: int = 20
    """How many one-time KEM prekeys the relay should hold (each public key is 1,569 bytes)."""
    kem_pre_key_low_water: int = 5
    """Top the KEM prekeys up when the relay holds fewer than this many (the last-resort KEM
    prekey serves when they run out)."""
    publish_kyber_pre_keys: bool = True
    """Publish signed Kyber1024 prekeys, so that peers start version-4 sessions (Signal's PQXDH and
    SPQR, what libsignal speaks) with this device."""
    kyber_pre_key_target: int = 20
    """How many one-time Kyber prekeys the relay should hold (each public key is 1,569 bytes)."""
    kyber_pre_key_low_water: int = 5
    """Top the Kyber prekeys up when the relay holds fewer than this many."""
    start_v4_sessions: bool = True
    """Start a version-4 session (Signal's PQXDH with Kyber1024, then SPQR) when the peer's bundle
    has a Kyber prekey; otherwise the project's PQXDH (version 3) or X3DH, by what the bundle has."""
    require_pqxdh: bool = False
    """Refuse PreKey messages made with X3DH alone (a relay could strip KEM prekeys from bundles)."""
    signed_pre_key_max_age: float = 7 * 24 * 3600.0
    """Rotate the signed prekey when it is older than this (seconds)."""
    signed_pre_key_grace: float = 14 * 24 * 3600.0
    """Keep a retired signed prekey this long, for PreKey messages still in flight (seconds)."""
    processed_retention: float = 60 * 24 * 3600.0
    """Remember processed message ids this long; longer than the relay's queue TTL (seconds)."""
    backoff_base: float = 0.05
    backoff_cap: float = 30.0
    max_in_flight: int = 128
    """Messages sent but not yet acknowledged by the relay, per connection (the relay pipelines 128)."""
    max_body_bytes: int = 96 * 1024
    """The largest ciphertext the relay stores (its ``--max-body-bytes``, 96 KiB by default).  A
    message whose ciphertext could exceed it is refused before it is encrypted
    (:attr:`client.Client.max_message_bytes`)."""
