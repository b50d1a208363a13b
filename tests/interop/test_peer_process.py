"""``python -m e2e.peer`` driven as a subprocess over standard input and output.

Whole conversations (the script of :mod:`tests.interop.conversation`: PreKey messages out of
order, crossed ratchet chains, 64 KiB plaintexts) with python-axolotl and with this project's own
store API on the other side, in both roles; then bad input lines of every kind, each answered with
a typed error while the peer keeps running and its sessions stay as they were.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from e2e.keys import Rng
from e2e.peer import MAX_LINE

from .axolotl_peer import AxolotlParty
from .conversation import check_types, run_conversation
from .keys_with_sign_bit import scalar_with_sign_bit
from .peer_process import REMOTE, REPOSITORY, PeerError, PeerProcess
from .store_peer import StoreParty

pytestmark = pytest.mark.interop


@pytest.fixture
def peer():
    process = PeerProcess()
    yield process
    assert process.close() == 0


def _play(alice, bob) -> None:
    alice.start_session(bob.bundle())
    transcript = run_conversation(alice, bob, seed=11)
    check_types(transcript)
    assert not bob.has_pre_key()


def test_hello_names_the_protocol(peer: PeerProcess) -> None:
    assert peer.hello["protocol"] == "e2e-peer" and peer.hello["version"] == 1
    assert {"create", "bundle", "process_bundle", "encrypt", "decrypt"} <= set(peer.hello["operations"])


def test_peer_as_bob_with_python_axolotl_alice(peer: PeerProcess) -> None:
    _play(AxolotlParty(scalar_with_sign_bit(b"peer-axolotl-alice", 1), registration_id=77), peer)


def test_peer_as_alice_with_python_axolotl_bob(peer: PeerProcess) -> None:
    _play(peer, AxolotlParty(scalar_with_sign_bit(b"peer-axolotl-bob", 0), registration_id=78))


def test_peer_with_our_store_api_on_the_other_side(peer: PeerProcess, rng: Rng) -> None:
    _play(StoreParty(rng, scalar_with_sign_bit(b"peer-store-alice", 0)), peer)


def test_two_peer_processes_talk_to_each_other() -> None:
    alice, bob = PeerProcess(registration_id=1), PeerProcess(registration_id=2)
    try:
        _play(alice, bob)
        assert bob.request("session", address=REMOTE)["remote_registration_id"] == 1
    finally:
        assert alice.close() == 0 and bob.close() == 0


def _line(op: str, **arguments: object) -> str:
    return json.dumps({"op": op, **arguments})


def _bad_lines() -> list[tuple[str, str, str]]:
    bad_request, decode = "PeerRequestError", "DecodeError"
    nobody = {"name": "nobody", "device_id": 1}
    return [
        ("not-json", "{not json", bad_request),
        ("a-list", "[1, 2]", bad_request),
        ("no-op", '{"id": 1}', bad_request),
        ("unknown-op", _line("format_disk"), bad_request),
        ("extra-argument", _line("hello", verbose=True), bad_request),
        ("missing-argument", _line("encrypt", address=REMOTE), bad_request),
        ("upper-case-hex", _line("encrypt", address=REMOTE, plaintext="AB"), bad_request),
        ("odd-hex", _line("decrypt", address=REMOTE, type=2, body="abc"), bad_request),
        ("bad-address", _line("encrypt", address={"name": ""}, plaintext=""), bad_request),
        ("device-id-zero", _line("session", address={"name": "x", "device_id": 0}), bad_request),
        ("boolean-type", _line("decrypt", address=REMOTE, type=True, body="00"), bad_request),
        ("unknown-type", _line("decrypt", address=REMOTE, type=7, body="00"), decode),
        ("garbage-message", _line("decrypt", address=REMOTE, type=2, body="3300"), decode),
        ("garbage-prekey", _line("decrypt", address=REMOTE, type=3, body="33"), decode),
        ("no-session", _line("encrypt", address=nobody, plaintext=""), "NoSessionError"),
        ("second-create", _line("create", registration_id=1), bad_request),
        ("too-many-prekeys", _line("generate_pre_keys", start=1, count=101), bad_request),
        ("unknown-signed-prekey", _line("bundle", device_id=1, signed_pre_key_id=999), "UnknownPreKeyError"),
        ("bad-bundle", _line("process_bundle", address=REMOTE, bundle={"device_id": 1}), bad_request),
    ]


def test_bad_lines_get_typed_errors_and_change_nothing(peer: PeerProcess) -> None:
    alice = AxolotlParty(scalar_with_sign_bit(b"peer-bad-lines", 0), registration_id=79)
    alice.start_session(peer.bundle())
    first = alice.encrypt(b"first")
    assert peer.decrypt(*first) == b"first"
    reply_type, reply = peer.encrypt(b"reply")
    assert alice.decrypt(reply_type, reply) == b"reply"
    waiting = alice.encrypt(b"waiting")
    for name, line, error_type in _bad_lines():
        answer = peer.send_line(line)
        assert answer["ok"] is False, name
        assert answer["error"]["type"] == error_type, (name, answer)
    # A damaged copy of a real message is refused; the real one still decrypts, once.
    damaged = bytearray(waiting[1])
    damaged[-1] ^= 0x01
    with pytest.raises(PeerError) as refused:
        peer.decrypt(waiting[0], bytes(damaged))
    assert refused.value.type == "InvalidMessageError"
    assert peer.decrypt(*waiting) == b"waiting"
    with pytest.raises(PeerError) as replayed:
        peer.decrypt(*waiting)
    assert replayed.value.type == "DuplicateMessageError"
    # The replayed first PreKey message, too, is refused without harm.
    with pytest.raises(PeerError) as replayed_prekey:
        peer.decrypt(*first)
    assert replayed_prekey.value.type == "DuplicateMessageError"
    reply_type, reply = peer.encrypt(b"still here")
    assert alice.decrypt(reply_type, reply) == b"still here"


def test_an_oversized_line_is_skipped_whole(peer: PeerProcess) -> None:
    answer = peer.send_line('{"op": "hello", "padding": "' + "a" * (MAX_LINE + 10) + '"}')
    assert answer == {
        "id": None,
        "ok": False,
        "error": {"type": "PeerRequestError", "message": f"a request line is at most {MAX_LINE} bytes"},
    }
    assert peer.request("hello")["protocol"] == "e2e-peer"


def test_requests_before_create_are_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "e2e.peer", "--seed", "00"],
        input=_line("encrypt", address=REMOTE, plaintext="") + "\n\n" + _line("hello") + "\n",
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == ""
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"]["type"] == "PeerRequestError" and "create" in first["error"]["message"]
    assert second["ok"] is True


def test_a_seeded_peer_is_reproducible() -> None:
    def identity() -> str:
        process = PeerProcess(seed=b"same seed")
        try:
            return process.identity.serialize().hex()
        finally:
            process.close()

    assert identity() == identity()
