"""The JSON-lines peer in process: every operation, PQXDH bundles, trust, the line reader's limits,
and that a refused request leaves the device exactly as it was."""

from __future__ import annotations

import io
import json

import pytest

from e2e.address import ProtocolAddress
from e2e.peer import MAX_LINE, OPERATIONS, Peer, bundle_from_json
from e2e.peer.__main__ import main, serve
from e2e.vectors import SeededRng

ALICE = {"name": "alice", "device_id": 1}
ALICE_ADDRESS = ProtocolAddress("alice", 1)
BOB = {"name": "bob", "device_id": 2}


def _peer(seed: bytes) -> Peer:
    return Peer(SeededRng(seed), lambda: 1_700_000_000_000, "test")


def _ask(peer: Peer, op: str, **arguments: object) -> dict:
    reply = json.loads(peer.handle_line(json.dumps({"op": op, "id": op, **arguments})))
    assert reply["id"] == op
    return reply


def _ok(peer: Peer, op: str, **arguments: object) -> dict:
    reply = _ask(peer, op, **arguments)
    assert reply["ok"] is True, reply
    return reply


def _error(peer: Peer, op: str, **arguments: object) -> str:
    reply = _ask(peer, op, **arguments)
    assert reply["ok"] is False, reply
    return reply["error"]["type"]


def _bob_with_kem(seed: bytes) -> tuple[Peer, dict]:
    bob = _peer(seed)
    _ok(bob, "create", registration_id=22)
    _ok(bob, "generate_signed_pre_key", key_id=3)
    _ok(bob, "generate_pre_keys", start=10, count=2)
    kem = _ok(bob, "generate_kem_pre_key", key_id=4, last_resort=True)
    assert kem["public_key"].startswith("0a") and len(kem["public_key"]) == 2 * 1569
    bundle = _ok(bob, "bundle", device_id=2, signed_pre_key_id=3, pre_key_id=10, kem_pre_key_id=4)["bundle"]
    return bob, bundle


def test_a_pqxdh_conversation_between_two_peers() -> None:
    bob, bundle = _bob_with_kem(b"bob")
    assert bundle_from_json(bundle).kem_pre_key is not None
    alice = _peer(b"alice")
    _ok(alice, "create", registration_id=11, identity_private="11" * 32)
    _ok(alice, "process_bundle", address=BOB, bundle=bundle)
    for number in range(3):
        sent = _ok(alice, "encrypt", address=BOB, plaintext=f"hello {number}".encode().hex())
        assert sent["type"] == 3
        got = _ok(bob, "decrypt", address=ALICE, type=sent["type"], body=sent["body"])
        assert bytes.fromhex(got["plaintext"]) == f"hello {number}".encode()
    reply = _ok(bob, "encrypt", address=ALICE, plaintext="6f6b")
    assert reply["type"] == 2
    assert _ok(alice, "decrypt", address=BOB, type=2, body=reply["body"])["plaintext"] == "6f6b"
    assert _ok(alice, "encrypt", address=BOB, plaintext="")["type"] == 2
    session = _ok(bob, "session", address=ALICE)
    assert session["has_session"] is True and session["remote_registration_id"] == 11
    assert _ok(bob, "session", address={"name": "carol", "device_id": 1})["has_session"] is False


def test_a_refused_message_changes_nothing() -> None:
    bob, bundle = _bob_with_kem(b"bob-2")
    alice = _peer(b"alice-2")
    _ok(alice, "create", registration_id=11)
    _ok(alice, "process_bundle", address=BOB, bundle=bundle)
    sent = _ok(alice, "encrypt", address=BOB, plaintext="01")
    before = bob.store.load_session(ALICE_ADDRESS) if bob.store else None
    damaged = sent["body"][:-2] + ("00" if sent["body"][-2:] != "00" else "01")
    assert _error(bob, "decrypt", address=ALICE, type=3, body=damaged) == "InvalidMessageError"
    assert before is None and bob.store is not None and bob.store.load_session(ALICE_ADDRESS) is None
    assert 10 in bob.store.pre_key_ids()
    assert _ok(bob, "decrypt", address=ALICE, type=3, body=sent["body"])["plaintext"] == "01"
    assert 10 not in bob.store.pre_key_ids()


def test_a_changed_identity_needs_trust() -> None:
    _, bundle = _bob_with_kem(b"bob-3")
    _, reinstalled = _bob_with_kem(b"bob-3 reinstalled")
    alice = _peer(b"alice-3")
    _ok(alice, "create", registration_id=11)
    _ok(alice, "process_bundle", address=BOB, bundle=bundle)
    assert reinstalled["identity_key"] != bundle["identity_key"]
    assert _error(alice, "process_bundle", address=BOB, bundle=reinstalled) == "UntrustedIdentityError"
    forged = dict(reinstalled, signed_pre_key=bundle["signed_pre_key"])
    assert _error(alice, "process_bundle", address=BOB, bundle=forged) == "InvalidSignatureError"
    assert _ok(alice, "trust", address=BOB, identity_key=reinstalled["identity_key"])["replaced"] is True
    _ok(alice, "process_bundle", address=BOB, bundle=reinstalled)
    assert _ok(alice, "session", address=BOB)["their_identity_key"] == reinstalled["identity_key"]


@pytest.mark.parametrize(
    ("op", "arguments"),
    [
        ("create", {"registration_id": -1}),
        ("create", {"registration_id": 1, "identity_private": "00"}),
        ("generate_signed_pre_key", {}),
        ("generate_pre_keys", {"start": 2**32 - 1, "count": 2}),
        ("generate_kem_pre_key", {"key_id": 1, "last_resort": "yes"}),
        ("bundle", {"device_id": 2**31, "signed_pre_key_id": 1}),
        ("process_bundle", {"address": ALICE, "bundle": []}),
        ("process_bundle", {"address": ALICE, "bundle": {"registration_id": 1}}),
        ("trust", {"address": ALICE, "identity_key": "06" + "00" * 32}),
        ("encrypt", {"address": {"name": "a" * 257, "device_id": 1}, "plaintext": ""}),
        ("encrypt", {"address": ["a", 1], "plaintext": ""}),
        ("shutdown", {"now": True}),
    ],
)
def test_malformed_arguments_are_typed_errors(op: str, arguments: dict) -> None:
    peer = _peer(b"malformed")
    if op != "create":
        _ok(peer, "create", registration_id=1)
    assert _error(peer, op, **arguments) in {"PeerRequestError", "DecodeError"}
    assert not peer.closed


def test_bundle_halves_are_refused() -> None:
    _, bundle = _bob_with_kem(b"bob-4")
    alice = _peer(b"alice-4")
    _ok(alice, "create", registration_id=11)
    for removed, error in (
        ("pre_key", "InvalidKeyError"),
        ("kem_pre_key_signature", "InvalidSignatureError"),
    ):
        partial = {key: value for key, value in bundle.items() if key != removed}
        assert _error(alice, "process_bundle", address=BOB, bundle=partial) == error
    assert alice.store is not None and alice.store.load_session(ProtocolAddress("bob", 2)) is None


def test_every_operation_is_documented_in_the_guide() -> None:
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "interop.md").read_text(encoding="utf-8")
    for op in OPERATIONS:
        assert f"`{op}`" in guide, op


def test_serve_reads_lines_until_shutdown() -> None:
    peer = _peer(b"serve")
    requests = io.BytesIO(
        b'{"op": "hello", "id": 1}\n'
        b"\n"
        b"\xff\xfe\n"
        + b'{"op": "hello", "x": "'
        + b"a" * MAX_LINE
        + b'"}\n'
        + b'{"op": "shutdown", "id": 2}\n'
        b'{"op": "hello", "id": 3}\n'
    )
    replies = io.StringIO()
    serve(peer, requests, replies)
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert [answer["id"] for answer in answers] == [1, None, None, 2]
    assert answers[1]["error"] == {"type": "PeerRequestError", "message": "a request line is UTF-8"}
    assert "at most" in answers[2]["error"]["message"]
    assert peer.closed


def test_serve_stops_at_end_of_input() -> None:
    replies = io.StringIO()
    serve(_peer(b"eof"), io.BytesIO(b'{"op": "hello"}'), replies)
    assert json.loads(replies.getvalue())["ok"] is True


def test_main_serves_standard_input(monkeypatch, capsys) -> None:
    requests = b'{"op": "hello", "id": 1}\n{"op": "create", "id": 2, "registration_id": 5}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(requests)))
    assert main(["--seed", "0a0b"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["protocol"] == "e2e-peer" and first["implementation"].startswith("e2e-relay")
    assert second["ok"] is True and second["identity_key"].startswith("05")


def test_a_bad_seed_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--seed", "not hex"])
    assert caught.value.code == 2


def test_repr_says_nothing_secret() -> None:
    peer = _peer(b"repr")
    _ok(peer, "create", registration_id=1, identity_private="22" * 32)
    assert "22" * 4 not in repr(peer) and repr(peer) == "Peer(implementation='test', created=True)"
