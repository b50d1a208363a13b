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

import ast
import dataclasses
import functools
import inspect
import itertools
import math
from dataclasses import dataclass

__all__ = ["Limits", "describe"]

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
    """Frames a connection may send at once before the frame rate applies."""
    byte_rate: float = 8.0 * MIB
    """Bytes per second a connection may send, sustained (excess is read later)."""
    byte_burst: int = 16 * MIB
    """Bytes a connection may send at once before the byte rate applies."""
    max_devices_per_account: int = 100
    """Devices one account may register; bounds a bundle fetch's answer (one bundle per device)."""
    max_connections_per_address: int = 256
    """Connections open at once from one IP address; more are closed with 1013."""
    open_timeout: float = 10.0
    """Seconds for the WebSocket opening handshake."""
    auth_timeout: float = 10.0
    """Seconds from the challenge to a successful proof; the challenge is stale afterwards."""
    ping_interval: float | None = 20.0
    """Seconds between keepalive pings (None: no pings)."""
    ping_timeout: float | None = 20.0
    """Seconds a keepalive ping may wait for its pong before the connection is closed (None: forever)."""
    close_timeout: float = 5.0
    """Seconds the closing handshake may take before the TCP connection is dropped."""
    max_outgoing_frames: int = 512
    """Frames waiting to be written to one connection; a connection that overflows it is closed."""
    max_outgoing_bytes: int = 4 * MIB
    """Bytes of pushed messages waiting to be written to one connection; pushing pauses beyond it."""
    max_inflight: int = 256
    """Pushed messages waiting for the recipient's acknowledgement before pushing pauses."""
    max_pipelined: int = 128
    """Sends and acknowledgements of one connection waiting for their commit."""
    write_timeout: float = 30.0
    """Seconds the relay's writes to one connection may make no progress (the peer reads nothing)
    before the connection is dropped at the TCP level as too slow."""
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
    """Membership changes a device may make at once."""
    group_send_rate: float = 100.0
    """Group sends per second a device may make, sustained: each one is queued for every member device."""
    group_send_burst: int = 200
    """Group sends a device may make at once."""

    def __post_init__(self) -> None:
        """Refuse a bound that cannot work: every limit is a finite number above zero.

        The exceptions: ``prekey_low_water`` may be 0 (never ask for more prekeys), and the
        keepalive's ``ping_interval`` and ``ping_timeout`` may be None (off).  Raises ValueError
        naming the option.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            option = "--" + f.name.replace("_", "-")
            if value is None and f.name in ("ping_interval", "ping_timeout"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{option} must be a number, not {value!r}")
            low = 0 if f.name == "prekey_low_water" else None
            if not math.isfinite(value) or (value < low if low is not None else value <= 0):
                bound = "0 or more" if low is not None else "above 0"
                raise ValueError(f"{option} must be a finite number {bound}, not {value!r}")


@functools.cache
def describe() -> dict[str, str]:
    """Each field's docstring (the text under it in this module), by field name, for ``--help``."""
    tree = ast.parse(inspect.getsource(Limits))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            # Plain text for a terminal: no reStructuredText quoting, and no stray % for argparse.
            text = " ".join(following.value.value.split()).replace("``", "")
            docs[node.target.id] = text.replace("%", "%%")
    return docs
