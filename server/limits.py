"""Every bound the relay enforces, in one frozen record.

Theory
------
A relay facing the Internet must never let one peer grow its memory, its disk or its event loop
without bound.  Each resource has a limit here: incoming frame size, the rate of frames and bytes a
connection may send (enforced by reading more slowly, which pushes back through TCP), connections
per address, how long a handshake and an authentication may take, how many frames may wait to be
written to one connection, how many pushed messages may wait unacknowledged, how long a write may
stall before the reader is judged too slow, queue caps per recipient and how long a message lives.
The command line exposes each of them (``e2e-relay --help``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]

KIB = 1024
MIB = 1024 * KIB
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The relay's bounds; the defaults suit a small public relay."""

    max_frame_bytes: int = 384 * KIB
    """Largest incoming WebSocket message; larger ones close the connection with 1009."""
    max_body_bytes: int = 96 * KIB
    """Largest message ciphertext (decoded); larger ones get ``too_large``."""
    max_keys_per_upload: int = 100
    """One-time prekeys of each kind per upload."""
    max_ack_ids: int = 100
    """Server ids per acknowledgement."""
    max_queue_messages: int = 10_000
    """Messages waiting for one device."""
    max_queue_bytes: int = 256 * MIB
    """Ciphertext bytes waiting for one device."""
    message_ttl: float = 30 * DAY
    """Seconds a queued message (and its duplicate-detection entry) is kept."""
    signed_prekey_grace: float = 30 * DAY
    """Seconds a rotated-out signed prekey stays retrievable."""
    prekey_low_water: int = 10
    """Below this many one-time prekeys of a kind, the owner is told to replenish."""
    bundle_rate: float = 1.0
    """Bundle fetches per second a device may make, sustained."""
    bundle_burst: int = 30
    """Bundle fetches a device may make at once."""
    frame_rate: float = 1000.0
    """Frames per second a connection may send, sustained (excess is read later)."""
    frame_burst: int = 2000
    byte_rate: float = 8.0 * MIB
    """Bytes per second a connection may send, sustained (excess is read later)."""
    byte_burst: int = 16 * MIB
    max_connections_per_address: int = 256
    open_timeout: float = 10.0
    """Seconds for the WebSocket opening handshake."""
    auth_timeout: float = 10.0
    """Seconds from the challenge to a successful proof; the challenge is stale afterwards."""
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    max_outgoing_frames: int = 512
    """Frames waiting to be written to one connection; a connection that overflows it is closed."""
    max_inflight: int = 256
    """Pushed messages waiting for the recipient's acknowledgement before pushing pauses."""
    max_pipelined: int = 128
    """Sends and acknowledgements of one connection waiting for their commit."""
    write_timeout: float = 30.0
    """Seconds one write may wait for the peer to read before the peer is disconnected as too slow."""
    max_errors: int = 32
    """Malformed requests (bad frames, bad fields, unknown ops) one connection may make before it is
    closed with 1008; refusals of well-formed requests do not count."""
    sweep_interval: float = 60.0
    """Seconds between deletions of expired messages."""
    # Groups.
    max_group_members: int = 1024
    """Members of one group (WhatsApp's limit); a change listing more is refused with ``too_many_members``."""
    max_groups_per_account: int = 256
    """Groups one account may be a member of; adding it to one more is refused with ``too_many_groups``."""
    max_group_history: int = 256
    """Membership changes returned by one ``group_history`` request."""
    group_change_rate: float = 1.0
    """Membership changes per second a device may make, sustained (create, add, remove, leave)."""
    group_change_burst: int = 30
    group_send_rate: float = 100.0
    """Group sends per second a device may make, sustained: each one is queued for every member device."""
    group_send_burst: int = 200
