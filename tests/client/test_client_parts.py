"""The client's small parts: backoff delays, the message envelope, the events' and errors' reprs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.backoff import Backoff
from client.envelope import Envelope, decode, encode
from client.errors import IdentityChanged
from client.events import Message
from e2e.errors import DecodeError, UntrustedIdentityError
from e2e.keys import KeyPair


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    draws = iter([1.0 - 1e-9, 0.5, 0.0, 1.0 - 1e-9, 1.0 - 1e-9, 1.0 - 1e-9, 1.0 - 1e-9])
    backoff = Backoff(base=0.5, cap=3.0, random=lambda: next(draws))
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays[0] == pytest.approx(0.5)
    assert delays[1] == pytest.approx(0.5)  # half of 1.0
    assert delays[2] == 0.0
    assert delays[3] == pytest.approx(3.0)  # 4.0 capped at 3.0
    assert max(delays) <= 3.0
    backoff.reset()
    assert backoff.ceiling() == 0.5
    backoff.failures = 10_000
    assert backoff.ceiling() == 3.0


def test_backoff_refuses_nonsense():
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_envelope_round_trip_and_strict_decoding():
    envelope = Envelope(b"\x01" * 16, 1_700_000_000_123, b"hello")
    data = encode(envelope)
    assert len(data) == 25 + 5
    assert decode(data) == envelope
    assert decode(data[:25]).body == b""
    with pytest.raises(DecodeError):
        decode(data[:24])
    with pytest.raises(DecodeError):
        decode(b"\x02" + data[1:])
    with pytest.raises(ValueError):
        encode(Envelope(b"short", 0, b""))
    assert "hello" not in repr(envelope)


def test_message_repr_hides_the_body_and_identity_changed_is_typed(rng):
    message = Message("bob", 1, "ab" * 16, 5, 6, b"top secret")
    assert "top secret" not in repr(message)
    assert message.text == "top secret"
    old, new = KeyPair.generate(rng).public_key, KeyPair.generate(rng).public_key
    error = IdentityChanged("bob", 1, old, new)
    assert isinstance(error, UntrustedIdentityError)
    assert old.fingerprint() in str(error) and new.fingerprint() in str(error)


@given(message_id=st.binary(min_size=16, max_size=16), timestamp=st.integers(0, 2**64 - 1), body=st.binary())
def test_envelope_round_trips_any_content(message_id, timestamp, body):
    envelope = Envelope(message_id, timestamp, body)
    assert decode(encode(envelope)) == envelope


@given(data=st.binary(max_size=64))
def test_envelope_decoding_raises_only_decode_error(data):
    try:
        envelope = decode(data)
    except DecodeError:
        return
    assert encode(envelope) == data
