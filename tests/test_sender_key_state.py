"""Sender-key state: the chain KDF against independent code, the limits, libsignal's rules for adding
states, and the storage format (round trips, the frozen fixture, refusal of malformed records)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from conftest import DeterministicRng
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e import protobuf
from e2e.errors import (
    DuplicateMessageError,
    InvalidMessageError,
    StateFormatError,
    TooManySkippedMessagesError,
)
from e2e.keys import KeyPair
from e2e.records import header
from e2e.sender_key_messages import SenderKeyFraming
from e2e.sender_key_state import (
    MAX_FORWARD_JUMPS,
    MAX_MESSAGE_KEYS,
    MAX_SENDER_KEY_STATES,
    SenderChainKey,
    SenderKeyRecord,
    SenderKeyState,
    SenderMessageKey,
)

FIXTURES = Path(__file__).parent / "fixtures"
LIBSIGNAL = SenderKeyFraming.LIBSIGNAL
AXOLOTL = SenderKeyFraming.AXOLOTL


def _reference_keys(chain_key: bytes, steps: int) -> tuple[bytes, bytes, bytes]:
    """The IV, AES key and chain key after ``steps`` steps, with hmac and cryptography's HKDF."""
    for _ in range(steps):
        chain_key = hmac.new(chain_key, b"\x02", hashlib.sha256).digest()
    seed = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    derived = HKDF(hashes.SHA256(), 48, salt=None, info=b"WhisperGroup").derive(seed)
    return derived[:16], derived[16:], chain_key


def _state(rng: DeterministicRng, iteration: int = 0, own: bool = False, chain_id: int = 7) -> SenderKeyState:
    signing = KeyPair.generate(rng)
    return SenderKeyState(
        LIBSIGNAL, chain_id, SenderChainKey(iteration, rng(32)), signing.public_key, signing if own else None
    )


@pytest.mark.parametrize("steps", [0, 1, 2, 31, 100])
def test_chain_and_message_keys_match_independent_code(steps: int) -> None:
    chain_key = bytes(range(32))
    key = SenderChainKey(0, chain_key)
    for _ in range(steps):
        key = key.next()
    iv, cipher_key, expected_chain = _reference_keys(chain_key, steps)
    assert key.key == expected_chain
    assert key.iteration == steps
    assert key.message_key().iv_and_cipher_key == (iv, cipher_key)
    assert key.step()[0] == key.message_key()


def test_the_fast_group_key_derivation_is_hkdf() -> None:
    from e2e.kdf import hkdf
    from e2e.primitives import derive_group_message_keys
    from e2e.sender_key_state import GROUP_INFO

    for seed in (bytes(32), bytes(range(32)), b"\xff" * 32):
        assert derive_group_message_keys(seed) == hkdf(b"", seed, GROUP_INFO, 48)
    assert GROUP_INFO == b"WhisperGroup"


def test_chain_keys_match_python_axolotl() -> None:
    from axolotl.groups.ratchet.senderchainkey import SenderChainKey as AxolotlChainKey

    theirs = AxolotlChainKey(0, bytes(range(32)))
    ours = SenderChainKey(0, bytes(range(32)))
    for _ in range(5):
        their_key = theirs.getSenderMessageKey()
        assert ours.message_key().iv_and_cipher_key == (
            bytes(their_key.getIv()),
            bytes(their_key.getCipherKey()),
        )
        theirs, ours = theirs.getNext(), ours.next()
        assert ours.key == bytes(theirs.getSeed())


def test_plan_changes_nothing_and_commit_applies(rng: DeterministicRng) -> None:
    state = _state(rng)
    before = SenderKeyRecord([state]).serialize()
    step = state.plan_receive(3)
    assert SenderKeyRecord([state]).serialize() == before
    assert [key.iteration for key in step.skipped] == [0, 1, 2]
    state.commit(step)
    assert state.iteration == 4
    assert state.stored_iterations() == [0, 1, 2]
    late = state.plan_receive(1)
    assert late.used_stored
    state.commit(late)
    assert state.stored_iterations() == [0, 2]
    with pytest.raises(DuplicateMessageError):
        state.plan_receive(1)
    with pytest.raises(DuplicateMessageError):
        state.plan_receive(3)


def test_forward_jump_limit(rng: DeterministicRng) -> None:
    state = _state(rng, iteration=10)
    with pytest.raises(TooManySkippedMessagesError):
        state.plan_receive(10 + MAX_FORWARD_JUMPS + 1)
    step = state.plan_receive(10 + MAX_FORWARD_JUMPS)
    # Only the newest MAX_MESSAGE_KEYS skipped keys are kept, as libsignal keeps them.
    assert len(step.skipped) == MAX_MESSAGE_KEYS
    assert step.skipped[-1].iteration == 10 + MAX_FORWARD_JUMPS - 1
    state.commit(step)
    assert state.iteration == 10 + MAX_FORWARD_JUMPS + 1
    assert len(state.stored_iterations()) == MAX_MESSAGE_KEYS


def test_stored_keys_are_capped_oldest_first(rng: DeterministicRng) -> None:
    state = _state(rng)
    state.commit(state.plan_receive(1500))
    state.commit(state.plan_receive(state.iteration + 1000))
    stored = state.stored_iterations()
    assert len(stored) == MAX_MESSAGE_KEYS
    # 0..1499 were stored first, then 1501..2500: the oldest 500 made room.
    assert stored[0] == 500
    assert stored[-1] == 2500
    assert 1500 not in stored
    with pytest.raises(DuplicateMessageError):
        state.plan_receive(0)


def test_the_last_iteration_cannot_be_stepped_past(rng: DeterministicRng) -> None:
    state = _state(rng, iteration=0xFFFF_FFFF)
    with pytest.raises(InvalidMessageError, match="exhausted"):
        state.plan_receive(0xFFFF_FFFF)
    with pytest.raises(InvalidMessageError, match="exhausted"):
        state.chain_key.step()


def test_add_state_follows_libsignal(rng: DeterministicRng) -> None:
    record = SenderKeyRecord()
    states = [_state(rng, chain_id=number) for number in range(1, 7)]
    for state in states[:5]:
        record.add_state(state)
    assert [state.chain_id for state in record] == [5, 4, 3, 2, 1]
    record.add_state(states[5])
    assert [state.chain_id for state in record] == [6, 5, 4, 3, 2]
    assert len(record.states) == MAX_SENDER_KEY_STATES
    # The same chain again (same id and signing key) keeps its progress and moves to the front.
    advanced = record.state_for_chain_id(3)
    assert advanced is not None
    advanced.commit(advanced.plan_receive(9))
    again = SenderKeyState(LIBSIGNAL, 3, SenderChainKey(0, bytes(32)), advanced.signing_key)
    assert record.add_state(again) is advanced
    assert [state.chain_id for state in record] == [3, 6, 5, 4, 2]
    assert advanced.iteration == 10
    # The same id with another signing key replaces the chain.
    replacement = _state(rng, chain_id=3)
    record.add_state(replacement)
    assert record.state_for_chain_id(3) is replacement
    assert len(record.states) == 5


def test_round_trip_keeps_everything(rng: DeterministicRng) -> None:
    own = _state(rng, own=True, chain_id=1)
    theirs = _state(rng, iteration=40, chain_id=2)
    theirs.commit(theirs.plan_receive(45))
    old = SenderKeyState(AXOLOTL, 3, SenderChainKey(2, rng(32)), KeyPair.generate(rng).public_key)
    record = SenderKeyRecord([own, theirs, old])
    copy = SenderKeyRecord.deserialize(record.serialize())
    assert copy.serialize() == record.serialize()
    assert [state.chain_id for state in copy] == [1, 2, 3]
    first, second, third = copy.states
    assert first.signing_key_pair == own.signing_key_pair
    assert second.signing_key_pair is None
    assert second.stored_iterations() == [40, 41, 42, 43, 44]
    assert (third.framing, third.iteration) == (AXOLOTL, 2)
    assert SenderKeyRecord.deserialize(SenderKeyRecord().serialize()).is_empty()


def test_frozen_fixture() -> None:
    document = json.loads((FIXTURES / "sender-key-record-v1.json").read_text())
    data = bytes.fromhex(document["record"])
    record = SenderKeyRecord.deserialize(data)
    expected = document["expected"]
    assert len(record.states) == len(expected["states"])
    for state, want in zip(record.states, expected["states"], strict=True):
        assert state.framing.name == want["framing"]
        assert state.chain_id == want["chain_id"]
        assert state.iteration == want["iteration"]
        assert state.chain_key.key.hex() == want["chain_key"]
        assert state.signing_key.serialize().hex() == want["signing_key"]
        assert (state.signing_key_pair is not None) == want["own"]
        assert state.stored_iterations() == want["stored_iterations"]
    assert record.serialize() == data


def _state_bytes(
    rng: DeterministicRng,
    framing: int = 1,
    chain_key: bytes = bytes(32),
    private: bytes | None = None,
    keys: tuple[tuple[int, bytes], ...] = (),
    iteration: int = 5,
) -> bytes:
    signing = KeyPair.generate(rng)
    fields = [
        protobuf.encode_uint_field(1, framing),
        protobuf.encode_uint_field(2, 7),
        protobuf.encode_uint_field(3, iteration),
        protobuf.encode_bytes_field(4, chain_key),
        protobuf.encode_bytes_field(5, signing.public_key.serialize()),
    ]
    if private is not None:
        fields.append(protobuf.encode_bytes_field(6, private))
    for stored, seed in keys:
        fields.append(
            protobuf.encode_bytes_field(
                7, protobuf.encode_uint_field(1, stored) + protobuf.encode_bytes_field(2, seed)
            )
        )
    return b"".join(fields)


def _record(*states: bytes) -> bytes:
    return header(ord("G")) + b"".join(protobuf.encode_bytes_field(1, state) for state in states)


def test_malformed_records_are_refused(rng: DeterministicRng) -> None:
    good = _state_bytes(rng, keys=((1, bytes(32)), (3, bytes(32))))
    assert SenderKeyRecord.deserialize(_record(good)).states[0].stored_iterations() == [1, 3]
    cases = {
        "other kind": b"S\x01",
        "other version": b"G\x02",
        "truncated": _record(good)[:-1],
        "six states": _record(*(_state_bytes(rng) for _ in range(6))),
        "a chain id twice": _record(_state_bytes(rng), _state_bytes(rng)),
        "unknown framing": _record(_state_bytes(rng, framing=9)),
        "short chain key": _record(_state_bytes(rng, chain_key=bytes(31))),
        "short private key": _record(_state_bytes(rng, private=bytes(31))),
        "foreign private key": _record(
            _state_bytes(rng, private=KeyPair.generate(rng).private_key.serialize())
        ),
        "key at the chain": _record(_state_bytes(rng, keys=((5, bytes(32)),))),
        "key twice": _record(_state_bytes(rng, keys=((1, bytes(32)), (1, bytes(32))))),
        "short seed": _record(_state_bytes(rng, keys=((1, bytes(31)),))),
        "too many keys": _record(
            _state_bytes(rng, iteration=3000, keys=tuple((n, bytes(32)) for n in range(MAX_MESSAGE_KEYS + 1)))
        ),
        "not bytes": bytearray(_record(good)),
    }
    for name, data in cases.items():
        with pytest.raises(StateFormatError):
            SenderKeyRecord.deserialize(data)  # type: ignore[arg-type]
        assert name


def test_repr_redacts_secrets(rng: DeterministicRng) -> None:
    state = _state(rng, own=True)
    record = SenderKeyRecord([state])
    text = (
        repr(record)
        + repr(state.chain_key)
        + repr(state.chain_key.message_key())
        + repr(state.plan_receive(0))
    )
    assert state.chain_key.key.hex() not in text
    assert state.chain_key.message_key().seed.hex() not in text
    assert state.signing_key_pair is not None
    assert state.signing_key_pair.private_key.serialize().hex() not in text
    assert "redacted" in text
    assert isinstance(state.chain_key.message_key(), SenderMessageKey)
