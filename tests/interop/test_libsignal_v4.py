"""Kyber-1024 and the version-4 session start against libsignal 0.103 (the npm package, in Node).

What libsignal can check without SPQR (libsignal refuses version-4 messages whose ``pq_ratchet`` is
empty, so message exchange waits for ``e2e.spqr``):

* its Kyber1024 keys (``KEMKeyPair.generate``) read as round-3 Kyber keys here, and work;
* it processes a bundle we publish (our Kyber prekey and our XEdDSA signature over ``0x08 ‖ pk``),
  encapsulates to our key, and the PreKeySignalMessage it sends parses here; our decapsulation and
  PQXDH then give the keys libsignal stored in its session record (read from the record's
  protobuf: the receiving chain of Bob's signed prekey is PQXDH's ``CK``, the root key and sending
  chain its first ``KDF_RK``), one-time prekey or not, with our keys or with keys libsignal made;
* a bundle with a bad Kyber signature is refused by libsignal, as by us;
* we process libsignal's bundle (verifying its Kyber signature) and send a version-4 PreKey message
  that libsignal parses, finds the prekeys of and runs PQXDH on, refusing it only at SPQR.

With SPQR behind the seam (``e2e.spqr.ratchet.SpqrRatchetFactory``) the same starts complete both
ways: our Bob decrypts libsignal's PreKey burst and libsignal our reply; libsignal's Bob decrypts our
PreKey message (so it decapsulates our Kyber ciphertext to our secret) and we its reply.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from e2e import pqxdh_v4, protobuf
from e2e.errors import InvalidMessageError, InvalidSignatureError
from e2e.keys import KeyPair, PrivateKey, PublicKey
from e2e.kyber import KyberCiphertext, KyberKeyPair, KyberPrivateKey, KyberPublicKey, encapsulate
from e2e.primitives import chain_step, root_step
from e2e.session import SessionRecord
from e2e.spqr.ratchet import SpqrRatchetFactory
from e2e.vectors import SeededRng
from e2e.wire import MessageType, PreKeySignalMessage
from e2e.x3dh import PreKeyBundle

from .node_peer import Address, NodePeer, NodePeerError

pytestmark = pytest.mark.interop

ALICE = Address("alice", 1)
BOB = Address("bob", 1)

# libsignal's storage.proto: RecordStructure {1: current_session}; SessionStructure {1: version,
# 4: root_key, 6: sender_chain, 7: receiver_chains (repeated), 13: alice_base_key,
# 14: pending_kyber_pre_key {1: id, 2: ciphertext}, 15: pq_ratchet_state};
# Chain {1: sender_ratchet_key, 3: chain_key {1: index, 2: key}}.
_RECORD = {1: protobuf.Field(protobuf.LEN)}
_SESSION = {
    1: protobuf.Field(protobuf.VARINT),
    4: protobuf.Field(protobuf.LEN),
    6: protobuf.Field(protobuf.LEN),
    7: protobuf.Field(protobuf.LEN, repeated=True),
    13: protobuf.Field(protobuf.LEN),
    14: protobuf.Field(protobuf.LEN),
    15: protobuf.Field(protobuf.LEN),
}
_CHAIN = {1: protobuf.Field(protobuf.LEN), 3: protobuf.Field(protobuf.LEN)}
_CHAIN_KEY = {1: protobuf.Field(protobuf.VARINT), 2: protobuf.Field(protobuf.LEN)}
_PENDING_KYBER = {1: protobuf.Field(protobuf.VARINT), 2: protobuf.Field(protobuf.LEN)}


def _bytes(result: dict[str, Any], name: str) -> bytes:
    return base64.b64decode(result[name], validate=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chain(data: bytes) -> tuple[bytes, bytes]:
    chain = protobuf.parse(data, _CHAIN)
    key = protobuf.parse(protobuf.get_bytes(chain, 3, "chain key"), _CHAIN_KEY)
    return protobuf.get_bytes(chain, 1, "ratchet key"), protobuf.get_bytes(key, 2, "key")


def _libsignal_session(peer: NodePeer, party: str, address: Address) -> dict[str, Any]:
    exported = peer.call("session_record_export", party=party, peer=address.to_json())["record"]
    record = protobuf.parse(base64.b64decode(exported), _RECORD)
    session = protobuf.parse(protobuf.get_bytes(record, 1, "current session"), _SESSION)
    receiver_chains = [_chain(chain) for chain in session[7]]
    pending = protobuf.parse(protobuf.get_bytes(session, 14, "pending Kyber prekey"), _PENDING_KYBER)
    return {
        "version": session[1],
        "root_key": session[4],
        "sender_chain": _chain(session[6]),
        "receiver_chains": receiver_chains,
        "alice_base_key": session[13],
        "pending_kyber_id": pending[1],
        "pending_kyber_ciphertext": pending[2],
        "has_pq_ratchet_state": bool(session.get(15)),
    }


def _our_bob(seed_keys: KyberKeyPair | None = None) -> dict[str, Any]:
    rng = SeededRng(b"libsignal-v4-bob")
    bob = {
        "identity": KeyPair.generate(rng),
        "signed": KeyPair.generate(rng),
        "one_time": KeyPair.generate(rng),
        "kyber": seed_keys or KyberKeyPair.generate(rng),
        "rng": rng,
    }
    return bob


def _bundle_json(
    bob: dict[str, Any], with_one_time: bool, kyber_signature: bytes | None = None
) -> dict[str, Any]:
    rng = bob["rng"]
    kyber_public: KyberPublicKey = bob["kyber"].public_key
    bundle = {
        "registration_id": 4242,
        "device_id": 1,
        "identity_key": _b64(bob["identity"].public_key.serialize()),
        "signed_pre_key_id": 7,
        "signed_pre_key": _b64(bob["signed"].public_key.serialize()),
        "signed_pre_key_signature": _b64(bob["identity"].sign(bob["signed"].public_key.serialize(), rng)),
        "kyber_pre_key_id": 9001,
        "kyber_pre_key": _b64(kyber_public.serialize()),
        "kyber_pre_key_signature": _b64(
            kyber_signature or bob["identity"].sign(kyber_public.serialize(), rng)
        ),
    }
    if with_one_time:
        bundle["pre_key_id"] = 31
        bundle["pre_key"] = _b64(bob["one_time"].public_key.serialize())
    return bundle


def _check_agreement(
    libsignal: NodePeer,
    body: bytes,
    identity: KeyPair,
    signed: KeyPair,
    one_time: KeyPair | None,
    kyber: KyberKeyPair,
    sent: int = 1,
) -> PreKeySignalMessage:
    """Our Bob's PQXDH on libsignal Alice's first message gives the keys libsignal Alice stored
    after sending ``sent`` messages.
    """
    message = PreKeySignalMessage.deserialize(body)
    assert message.version == 4 and message.message.version == 4
    assert isinstance(message.kem_ciphertext, KyberCiphertext)
    assert message.message.pq_ratchet  # libsignal always runs SPQR
    secret = pqxdh_v4.respond(identity, signed, one_time, kyber, message.initial_message())
    stored = _libsignal_session(libsignal, "alice", BOB)
    assert stored["version"] == 4 and stored["has_pq_ratchet_state"]
    assert stored["alice_base_key"] == message.base_key.serialize()
    assert stored["pending_kyber_ciphertext"] == message.kem_ciphertext.serialize()
    assert stored["pending_kyber_id"] == message.kem_pre_key_id
    # Alice's receiving chain for Bob's signed prekey is PQXDH's CK.
    assert stored["receiver_chains"] == [(signed.public_key.serialize(), secret.chain_key.key)]
    # Her root key and sending chain: KDF_RK(RK, DH(her first ratchet key, SPK_B)), from Bob's side.
    root_key, chain_key = root_step(secret.root_key.key, signed.agree(message.message.ratchet_key))
    assert stored["root_key"] == root_key
    for _ in range(sent):
        _, chain_key = chain_step(chain_key)
    assert stored["sender_chain"] == (message.message.ratchet_key.serialize(), chain_key)
    return message


def test_libsignals_kyber_keys_are_round_3_kyber_here(libsignal: NodePeer) -> None:
    for _ in range(3):
        pair = libsignal.call("session_kyber_key_pair")
        public = KyberPublicKey.deserialize(_bytes(pair, "public_key"))
        private = KyberPrivateKey.deserialize(_bytes(pair, "secret_key"))
        assert private.public_key() == public
        assert private.serialize() == _bytes(pair, "secret_key")
        ciphertext, secret = encapsulate(public, SeededRng(b"encapsulate" + public.raw[:8]))
        assert private.decapsulate(ciphertext) == secret


@pytest.mark.parametrize("with_one_time", [True, False])
def test_libsignal_starts_a_v4_session_from_our_bundle(libsignal: NodePeer, with_one_time: bool) -> None:
    bob = _our_bob()
    libsignal.create_identity("alice", registration_id=1234)
    libsignal.call(
        "session_process_bundle",
        party="alice",
        peer=BOB.to_json(),
        bundle=_bundle_json(bob, with_one_time),
    )
    sent = [
        libsignal.call(
            "session_encrypt",
            party="alice",
            peer=BOB.to_json(),
            plaintext=_b64(text),
        )
        for text in (b"hello", b"again")
    ]
    assert [answer["type"] for answer in sent] == [3, 3]
    bodies = [_bytes(answer, "body") for answer in sent]
    message = _check_agreement(
        libsignal,
        bodies[0],
        bob["identity"],
        bob["signed"],
        bob["one_time"] if with_one_time else None,
        bob["kyber"],
        sent=2,
    )
    assert (message.pre_key_id is not None) == with_one_time
    assert message.kem_pre_key_id == 9001 and message.registration_id == 1234
    # The burst repeats the base key and the Kyber ciphertext.
    second = PreKeySignalMessage.deserialize(bodies[1])
    assert second.base_key == message.base_key and second.kem_ciphertext == message.kem_ciphertext
    # With SPQR (e2e.spqr behind the seam) our Bob decrypts the burst; without it, our record refuses
    # the message (its pq_ratchet is not empty) and stays as it was.
    triple = SessionRecord(pq_ratchet_factory=SpqrRatchetFactory())
    for body, text in zip(bodies, (b"hello", b"again"), strict=True):
        assert (
            triple.decrypt_prekey_message(
                PreKeySignalMessage.deserialize(body),
                bob["identity"],
                bob["signed"],
                bob["one_time"] if with_one_time else None,
                bob["rng"],
                our_registration_id=4242,
                our_kem_pre_key=bob["kyber"],
            )
            == text
        )
    reply = triple.encrypt(b"hello libsignal", bob["rng"])
    assert reply.type == MessageType.WHISPER
    answer = libsignal.call(
        "session_decrypt", party="alice", peer=BOB.to_json(), type=int(reply.type), body=_b64(reply.body)
    )
    assert _bytes(answer, "plaintext") == b"hello libsignal"
    record = SessionRecord()
    with pytest.raises(InvalidMessageError):
        record.decrypt_prekey_message(
            message,
            bob["identity"],
            bob["signed"],
            bob["one_time"] if with_one_time else None,
            bob["rng"],
            our_registration_id=4242,
            our_kem_pre_key=bob["kyber"],
        )
    assert not record.has_current_state()


def test_libsignal_made_keys_decapsulate_here(libsignal: NodePeer) -> None:
    libsignal.create_identity("alice")
    libsignal.create_identity("bob", registration_id=77)
    bundle = libsignal.call(
        "session_bundle", party="bob", signed_pre_key_id=5, kyber_pre_key_id=6, pre_key_id=8
    )
    request = {
        "registration_id": 77,
        "device_id": 1,
        "signed_pre_key_id": 5,
        "kyber_pre_key_id": 6,
        "pre_key_id": 8,
        **{
            name: bundle[name]
            for name in (
                "identity_key",
                "signed_pre_key",
                "signed_pre_key_signature",
                "pre_key",
                "kyber_pre_key",
                "kyber_pre_key_signature",
            )
        },
    }
    libsignal.call(
        "session_process_bundle",
        party="alice",
        peer=BOB.to_json(),
        bundle=request,
    )
    body = _bytes(
        libsignal.call(
            "session_encrypt",
            party="alice",
            peer=BOB.to_json(),
            plaintext=_b64(b"hi"),
        ),
        "body",
    )
    # libsignal's own Bob decrypts it (the control), and our code, given Bob's keys, agrees.
    answer = libsignal.call(
        "session_decrypt",
        party="bob",
        peer=ALICE.to_json(),
        type=int(MessageType.PREKEY),
        body=_b64(body),
    )
    assert _bytes(answer, "plaintext") == b"hi"

    def pair(private_name: str) -> KeyPair:
        return KeyPair(PrivateKey(_bytes(bundle, private_name)))

    identity = pair("identity_private")
    assert identity.public_key == PublicKey.deserialize(_bytes(bundle, "identity_key"))
    kyber = KyberKeyPair(KyberPrivateKey.deserialize(_bytes(bundle, "kyber_secret_key")))
    assert kyber.public_key.serialize() == _bytes(bundle, "kyber_pre_key")
    _check_agreement(
        libsignal, body, identity, pair("signed_pre_key_private"), pair("pre_key_private"), kyber
    )


def test_libsignal_refuses_a_bundle_whose_kyber_signature_is_bad(libsignal: NodePeer) -> None:
    bob = _our_bob()
    libsignal.create_identity("alice")
    good = _bundle_json(bob, with_one_time=True)
    forged = bytearray(base64.b64decode(good["kyber_pre_key_signature"]))
    forged[5] ^= 0x01
    with pytest.raises(NodePeerError) as refused:
        libsignal.call(
            "session_process_bundle",
            party="alice",
            peer=BOB.to_json(),
            bundle={**good, "kyber_pre_key_signature": _b64(bytes(forged))},
        )
    assert "signature" in refused.value.message.lower()


def test_libsignal_takes_our_v4_prekey_message_with_spqr_and_refuses_it_without(libsignal: NodePeer) -> None:
    rng = SeededRng(b"libsignal-v4-alice")
    libsignal.create_identity("alice")
    libsignal.create_identity("bob", registration_id=55)
    made = libsignal.call(
        "session_bundle", party="bob", signed_pre_key_id=3, kyber_pre_key_id=4, pre_key_id=2
    )
    bundle = PreKeyBundle(
        registration_id=55,
        device_id=1,
        identity_key=PublicKey.deserialize(_bytes(made, "identity_key")),
        signed_pre_key_id=3,
        signed_pre_key=PublicKey.deserialize(_bytes(made, "signed_pre_key")),
        signed_pre_key_signature=_bytes(made, "signed_pre_key_signature"),
        pre_key_id=2,
        pre_key=PublicKey.deserialize(_bytes(made, "pre_key")),
        kem_pre_key_id=4,
        kem_pre_key=KyberPublicKey.deserialize(_bytes(made, "kyber_pre_key")),
        kem_pre_key_signature=_bytes(made, "kyber_pre_key_signature"),
    )
    # Our side verifies libsignal's two signatures, the Kyber one over 0x08 ‖ pk.
    record = SessionRecord.initiate(KeyPair.generate(rng), 66, bundle, rng)
    first = record.encrypt(b"hello libsignal", rng)
    assert first.type == MessageType.PREKEY and first.body[0] == 0x44
    with pytest.raises(InvalidSignatureError):
        SessionRecord.initiate(
            KeyPair.generate(rng), 66, replace(bundle, kem_pre_key_signature=bytes(64)), rng
        )
    libsignal.call("session_log_capture")
    with pytest.raises(NodePeerError) as refused:
        libsignal.call(
            "session_decrypt",
            party="bob",
            peer=ALICE.to_json(),
            type=int(MessageType.PREKEY),
            body=_b64(first.body),
        )
    assert "decryption failed" in refused.value.message
    # Refused by SPQR's minimum-version check (libsignal's log says which step refused it), which
    # runs after the message parsed, its prekeys were found and PQXDH made a session state.
    logs = "\n".join(libsignal.call("session_log_capture")["messages"])
    assert "post-quantum ratchet error" in logs and "Minimum version" in logs
    # With SPQR behind the seam, the same start from the same bundle goes through: libsignal
    # decapsulates our Kyber ciphertext, derives our keys and decrypts, and its reply decrypts here.
    identity = KeyPair.generate(rng)
    triple = SessionRecord.initiate(identity, 66, bundle, rng, pq_ratchet_factory=SpqrRatchetFactory())
    first = triple.encrypt(b"hello libsignal, with SPQR", rng)
    answer = libsignal.call(
        "session_decrypt",
        party="bob",
        peer=ALICE.to_json(),
        type=int(MessageType.PREKEY),
        body=_b64(first.body),
    )
    assert _bytes(answer, "plaintext") == b"hello libsignal, with SPQR"
    reply = libsignal.call(
        "session_encrypt",
        party="bob",
        peer=ALICE.to_json(),
        plaintext=_b64(b"hello back"),
    )
    assert reply["type"] == 2
    assert triple.decrypt(_bytes(reply, "body"), rng) == b"hello back"
