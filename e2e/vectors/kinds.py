"""The kinds of vector and how each recomputes its outputs from its inputs with the project's code.

Every kind is a function ``inputs -> outputs``: it reads its inputs through :class:`Inputs`,
which checks types and lengths and refuses fields the kind does not read, and returns a JSON-ready
dict (bytes as lowercase hex).  The checker compares that dict with a case's ``expected``; the
generator stores it as ``expected``.  ``docs/vectors.md`` describes each kind's fields.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from e2e import kyber
from e2e import pqxdh as pqxdh_agreement
from e2e import pqxdh_v4 as pqxdh_v4_agreement
from e2e.attachment import (
    AttachmentKey,
    blob_size,
    decrypt_attachment,
    encrypt_attachment,
    padded_size,
)
from e2e.business_name import BusinessName, issue_certificate, verify_certificate
from e2e.errors import DecodeError, E2EError, InvalidSignatureError
from e2e.explain import Event
from e2e.fingerprint import Fingerprint
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName
from e2e.group_membership import (
    GROUP_ID_LENGTH,
    GroupMember,
    MembershipChange,
    create_membership,
    next_membership,
    verify_membership_change,
)
from e2e.kdf import ChainKey, RootKey
from e2e.kem import KemKeyPair, KemPrivateKey, KemPublicKey
from e2e.keys import KeyPair, PrivateKey, PublicKey
from e2e.kyber import KyberKeyPair, KyberPublicKey
from e2e.sender_key_messages import SenderKeyFraming
from e2e.sender_key_state import SenderChainKey, SenderKeyRecord, SenderKeyState
from e2e.session import Ciphertext, SessionRecord
from e2e.vectors import SeededRng, VectorFormatError
from e2e.vectors.nist_drbg import NistDrbg
from e2e.wire import MessageType, PreKeySignalMessage
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret, initiate, respond

__all__ = ["KINDS", "Inputs", "Kind", "Output", "ScriptStep", "fixed_rng", "hex_bytes", "script_steps"]

Output = dict[str, object]

_MAX_CHAIN_INDEX = 100_000
Kind = Callable[[Mapping[str, object]], Output]


class Inputs:
    """Typed access to a case's ``inputs``; :meth:`done` refuses fields nobody read."""

    def __init__(self, raw: Mapping[str, object]) -> None:
        self._raw = raw
        self._read: set[str] = set()

    def _get(self, name: str, optional: bool) -> object:
        self._read.add(name)
        if name not in self._raw:
            if optional:
                return None
            raise VectorFormatError(f"missing input {name!r}")
        return self._raw[name]

    def hex(self, name: str, length: int | None = None) -> bytes:
        value = self.optional_hex(name, length)
        if value is None:
            raise VectorFormatError(f"missing input {name!r}")
        return value

    def optional_hex(self, name: str, length: int | None = None) -> bytes | None:
        value = self._get(name, optional=True)
        if value is None:
            return None
        return hex_bytes(name, value, length)

    def integer(self, name: str) -> int:
        value = self.optional_integer(name)
        if value is None:
            raise VectorFormatError(f"missing input {name!r}")
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self._get(name, optional=True)
        if value is None:
            return None
        if type(value) is not int or value < 0:
            raise VectorFormatError(f"input {name!r} is a non-negative integer")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self._get(name, optional=True)
        if value is None:
            return None
        if not isinstance(value, str):
            raise VectorFormatError(f"input {name!r} is a string")
        return value

    def public_key(self, name: str) -> PublicKey:
        try:
            return PublicKey.deserialize(self.hex(name, 33))
        except DecodeError as error:
            raise VectorFormatError(f"input {name!r}: {error}") from None

    def private_key(self, name: str) -> PrivateKey:
        return PrivateKey(self.hex(name, 32))

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self._get(name, optional=False)
        if not isinstance(value, str) or value not in choices:
            raise VectorFormatError(f"input {name!r} is one of {', '.join(choices)}")
        return value

    def text(self, name: str) -> str:
        value = self._get(name, optional=False)
        if not isinstance(value, str):
            raise VectorFormatError(f"input {name!r} is a string")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name, optional=False)
        if not isinstance(value, bool):
            raise VectorFormatError(f"input {name!r} is true or false")
        return value

    def sequence(self, name: str) -> list[object]:
        value = self._get(name, optional=False)
        if not isinstance(value, list):
            raise VectorFormatError(f"input {name!r} is a list")
        return value

    def done(self) -> None:
        unread = set(self._raw) - self._read
        if unread:
            raise VectorFormatError(f"unknown inputs {sorted(unread)}")


def hex_bytes(name: str, value: object, length: int | None = None) -> bytes:
    """Decode a lowercase hexadecimal field, checking its length in bytes if one is given."""
    if not isinstance(value, str) or value != value.lower():
        raise VectorFormatError(f"{name!r} is a lowercase hexadecimal string")
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        raise VectorFormatError(f"{name!r} is not hexadecimal") from None
    if length is not None and len(decoded) != length:
        raise VectorFormatError(f"{name!r} is {length} bytes, not {len(decoded)}")
    return decoded


def fixed_rng(*data: bytes) -> Callable[[int], bytes]:
    """An rng that returns each of ``data`` once, in order, for randomness pinned as inputs."""
    remaining = list(reversed(data))

    def rng(n: int) -> bytes:
        if not remaining or len(remaining[-1]) != n:
            raise VectorFormatError(f"the pinned randomness does not cover a request for {n} bytes")
        return remaining.pop()

    return rng


def xeddsa(raw: Mapping[str, object]) -> Output:
    """Signing (private_key, message, random → public_key, signature, and it verifies) or, when the
    inputs hold a public key and a signature instead, verification (→ valid)."""
    inputs = Inputs(raw)
    message = inputs.hex("message")
    if "public_key" in raw:
        public_key = inputs.public_key("public_key")
        signature = inputs.hex("signature")
        inputs.done()
        try:
            public_key.verify(message, signature)
        except InvalidSignatureError:
            return {"valid": False}
        return {"valid": True}
    private_key = inputs.private_key("private_key")
    random = inputs.hex("random", 64)
    inputs.done()
    signature = private_key.sign(message, fixed_rng(random))
    try:
        private_key.public_key().verify(message, signature)
        valid = True
    except InvalidSignatureError:
        valid = False
    return {
        "public_key": private_key.public_key().serialize().hex(),
        "signature": signature.hex(),
        "valid": valid,
    }


class _Handshake:
    """The inputs the ``x3dh`` and ``pqxdh`` kinds share, and Bob's signed prekey bundle built from them."""

    def __init__(self, inputs: Inputs) -> None:
        self.alice_identity = KeyPair(inputs.private_key("alice_identity_private"))
        self.alice_base_private = inputs.hex("alice_base_private", 32)
        self.bob_identity = KeyPair(inputs.private_key("bob_identity_private"))
        self.bob_signed = KeyPair(inputs.private_key("bob_signed_pre_key_private"))
        one_time_private = inputs.optional_hex("bob_one_time_pre_key_private", 32)
        self.bob_one_time = None if one_time_private is None else KeyPair(PrivateKey(one_time_private))
        self.signature_random = inputs.hex("signed_pre_key_signature_random", 64)
        self.registration_id = inputs.integer("registration_id")
        self.device_id = inputs.integer("device_id")
        self.signed_pre_key_id = inputs.integer("signed_pre_key_id")
        self.pre_key_id = inputs.optional_integer("pre_key_id")
        if (self.pre_key_id is None) != (self.bob_one_time is None):
            raise VectorFormatError("pre_key_id and bob_one_time_pre_key_private come together")
        self.signature = self.bob_identity.sign(
            self.bob_signed.public_key.serialize(), fixed_rng(self.signature_random)
        )

    def bundle(self) -> PreKeyBundle:
        return PreKeyBundle(
            registration_id=self.registration_id,
            device_id=self.device_id,
            identity_key=self.bob_identity.public_key,
            signed_pre_key_id=self.signed_pre_key_id,
            signed_pre_key=self.bob_signed.public_key,
            signed_pre_key_signature=self.signature,
            pre_key_id=self.pre_key_id,
            pre_key=None if self.bob_one_time is None else self.bob_one_time.public_key,
        )

    def kem_bundle(
        self, kem_pre_key_id: int, kem_pre_key: KemPublicKey | KyberPublicKey, signature_random: bytes
    ) -> tuple[PreKeyBundle, bytes]:
        """:meth:`bundle` with Bob's signed KEM prekey added, and the prekey's signature."""
        signature = self.bob_identity.sign(kem_pre_key.serialize(), fixed_rng(signature_random))
        bundle = replace(
            self.bundle(),
            kem_pre_key_id=kem_pre_key_id,
            kem_pre_key=kem_pre_key,
            kem_pre_key_signature=signature,
        )
        return bundle, signature

    def output(
        self,
        message: InitialMessage,
        alice_secret: SharedSecret,
        bob_secret: SharedSecret,
        events: list[Event],
        extra_keys: Output,
        extra_initial_message: Output,
    ) -> Output:
        """Every output of the handshake, in a fixed order; the ``extra_*`` fields are PQXDH's."""
        output: Output = {
            "alice_identity_public": self.alice_identity.public_key.serialize().hex(),
            "alice_base_public": message.base_key.serialize().hex(),
            "bob_identity_public": self.bob_identity.public_key.serialize().hex(),
            "bob_signed_pre_key_public": self.bob_signed.public_key.serialize().hex(),
            "signed_pre_key_signature": self.signature.hex(),
            **extra_keys,
        }
        if self.bob_one_time is not None:
            output["bob_one_time_pre_key_public"] = self.bob_one_time.public_key.serialize().hex()
        for event in events:
            if event.step == "x3dh.dh":
                output[str(event.public["name"]).lower()] = event.secret["output"].hex()
            elif event.step == "pqxdh.kem":
                output["kem_shared_secret"] = event.secret["shared_secret"].hex()
        output["root_key"] = alice_secret.root_key.key.hex()
        output["chain_key"] = alice_secret.chain_key.key.hex()
        output["associated_data"] = alice_secret.associated_data.hex()
        output["initial_message"] = {
            "identity_key": message.identity_key.serialize().hex(),
            "base_key": message.base_key.serialize().hex(),
            "signed_pre_key_id": message.signed_pre_key_id,
            "pre_key_id": message.pre_key_id,
            **extra_initial_message,
        }
        # Bob's side, which must agree with Alice's.
        output["bob_root_key"] = bob_secret.root_key.key.hex()
        output["bob_chain_key"] = bob_secret.chain_key.key.hex()
        return output


def x3dh(raw: Mapping[str, object]) -> Output:
    """Both sides of X3DH from pinned private keys (see docs/vectors.md for the fields)."""
    inputs = Inputs(raw)
    handshake = _Handshake(inputs)
    inputs.done()
    events: list[Event] = []
    message, alice_secret = initiate(
        handshake.alice_identity, handshake.bundle(), fixed_rng(handshake.alice_base_private), events.append
    )
    bob_secret = respond(handshake.bob_identity, handshake.bob_signed, handshake.bob_one_time, message)
    return handshake.output(message, alice_secret, bob_secret, events, {}, {})


def pqxdh(raw: Mapping[str, object]) -> Output:
    """Both sides of PQXDH with ML-KEM-1024, every random byte pinned (see docs/vectors.md)."""
    inputs = Inputs(raw)
    handshake = _Handshake(inputs)
    bob_kem = KemKeyPair(KemPrivateKey(inputs.hex("bob_kem_pre_key_seed", 64)))
    kem_signature_random = inputs.hex("kem_pre_key_signature_random", 64)
    kem_random = inputs.hex("kem_encapsulation_random", 32)
    kem_pre_key_id = inputs.integer("kem_pre_key_id")
    inputs.done()

    bundle, kem_signature = handshake.kem_bundle(kem_pre_key_id, bob_kem.public_key, kem_signature_random)
    events: list[Event] = []
    message, alice_secret = pqxdh_agreement.initiate(
        handshake.alice_identity,
        bundle,
        fixed_rng(handshake.alice_base_private),
        events.append,
        kem_rng=fixed_rng(kem_random),
    )
    bob_secret = pqxdh_agreement.respond(
        handshake.bob_identity, handshake.bob_signed, handshake.bob_one_time, bob_kem, message
    )
    if message.kem_ciphertext is None:
        raise VectorFormatError("PQXDH made no KEM ciphertext")
    return handshake.output(
        message,
        alice_secret,
        bob_secret,
        events,
        {
            "bob_kem_pre_key_public": bob_kem.public_key.serialize().hex(),
            "kem_pre_key_signature": kem_signature.hex(),
        },
        {
            "kem_pre_key_id": message.kem_pre_key_id,
            "kem_ciphertext": message.kem_ciphertext.serialize().hex(),
        },
    )


def pqxdh_v4(raw: Mapping[str, object]) -> Output:
    """Both sides of Signal's PQXDH (Kyber1024, message version 4), every random byte pinned.

    Bob's Kyber prekey comes from the 64-byte ``d ‖ z`` of ``bob_kyber_pre_key_seed``; Alice's
    ``rng`` gives her base key and then the encapsulation's 32 bytes.  Outputs add the Kyber prekey
    and its signature, the Kyber shared secret, the ciphertext and ``pq_ratchet_key``.
    """
    inputs = Inputs(raw)
    handshake = _Handshake(inputs)
    bob_kyber = KyberKeyPair.generate(fixed_rng(inputs.hex("bob_kyber_pre_key_seed", 64)))
    kyber_signature_random = inputs.hex("kyber_pre_key_signature_random", 64)
    kyber_random = inputs.hex("kyber_encapsulation_random", 32)
    kyber_pre_key_id = inputs.integer("kyber_pre_key_id")
    inputs.done()

    bundle, kyber_signature = handshake.kem_bundle(
        kyber_pre_key_id, bob_kyber.public_key, kyber_signature_random
    )
    events: list[Event] = []
    message, alice_secret = pqxdh_v4_agreement.initiate(
        handshake.alice_identity,
        bundle,
        fixed_rng(handshake.alice_base_private, kyber_random),
        events.append,
    )
    bob_secret = pqxdh_v4_agreement.respond(
        handshake.bob_identity, handshake.bob_signed, handshake.bob_one_time, bob_kyber, message
    )
    if message.kem_ciphertext is None or alice_secret.pq_ratchet_key is None:
        raise VectorFormatError("PQXDH v4 made no Kyber ciphertext or no pq_ratchet_key")
    output = handshake.output(
        message,
        alice_secret,
        bob_secret,
        events,
        {
            "bob_kyber_pre_key_public": bob_kyber.public_key.serialize().hex(),
            "kyber_pre_key_signature": kyber_signature.hex(),
        },
        {
            "kyber_pre_key_id": message.kem_pre_key_id,
            "kyber_ciphertext": message.kem_ciphertext.serialize().hex(),
        },
    )
    output["kyber_shared_secret"] = output.pop("kem_shared_secret")
    output["pq_ratchet_key"] = alice_secret.pq_ratchet_key.hex()
    output["bob_pq_ratchet_key"] = (bob_secret.pq_ratchet_key or b"").hex()
    return output


def kdf_root(raw: Mapping[str, object]) -> Output:
    """``KDF_RK(root_key, dh_out)`` → the next root key and the new chain key."""
    inputs = Inputs(raw)
    root_key = RootKey(inputs.hex("root_key", 32))
    dh_out = inputs.hex("dh_out", 32)
    inputs.done()
    new_root, chain_key = root_key.kdf_rk(dh_out)
    return {"root_key": new_root.key.hex(), "chain_key": chain_key.key.hex()}


def _message_keys_output(chain_key: ChainKey) -> Output:
    keys = chain_key.message_keys()
    return {
        "index": chain_key.index,
        "chain_key": chain_key.key.hex(),
        "cipher_key": keys.cipher_key.hex(),
        "mac_key": keys.mac_key.hex(),
        "iv": keys.iv.hex(),
    }


def kdf_chain(raw: Mapping[str, object]) -> Output:
    """A chain walked with ``KDF_CK`` from index 0: its key and message keys at each listed index."""
    inputs = Inputs(raw)
    chain_key = ChainKey(inputs.hex("chain_key", 32), 0)
    indices = inputs.sequence("indices")
    inputs.done()
    numbers = [i for i in indices if type(i) is int]
    if not numbers or len(numbers) != len(indices) or numbers != sorted(set(numbers)) or numbers[0] < 0:
        raise VectorFormatError("indices is a non-empty increasing list of non-negative integers")
    if numbers[-1] > _MAX_CHAIN_INDEX:
        raise VectorFormatError(f"chain indices stop at {_MAX_CHAIN_INDEX}")
    steps = []
    for index in numbers:
        while chain_key.index < index:
            chain_key = chain_key.next()
        steps.append(_message_keys_output(chain_key))
    return {"steps": steps}


def message_keys(raw: Mapping[str, object]) -> Output:
    """One chain key's message keys: the seed ``HMAC(ck, 0x01)`` split by HKDF, and the next chain key."""
    inputs = Inputs(raw)
    chain_key = ChainKey(inputs.hex("chain_key", 32), inputs.integer("counter"))
    inputs.done()
    output = _message_keys_output(chain_key)
    del output["chain_key"], output["index"]
    output["counter"] = chain_key.message_keys().counter
    output["next_chain_key"] = chain_key.next().key.hex()
    return output


def fingerprint(raw: Mapping[str, object]) -> Output:
    """A safety number from one side's point of view: the 60 digits and the scannable bytes."""
    inputs = Inputs(raw)
    local_key = inputs.public_key("local_identity_key")
    local_identifier = inputs.hex("local_identifier")
    remote_key = inputs.public_key("remote_identity_key")
    remote_identifier = inputs.hex("remote_identifier")
    version = inputs.integer("version")
    iterations = inputs.integer("iterations")
    inputs.done()
    if not 1 < iterations <= 1_000_000:
        raise VectorFormatError("iterations is between 2 and 1000000")
    result = Fingerprint.create(
        local_identifier, local_key, remote_identifier, remote_key, version, iterations
    )
    return {"displayable": str(result.displayable), "scannable": result.scannable.serialize().hex()}


_PARTIES = ("alice", "bob")


class ScriptStep(NamedTuple):
    """One checked step of a conversation script: ``sender`` sends ``plaintext`` as the message
    ``message_id``, or, with ``sender`` None, the message ``message_id`` is delivered.
    """

    sender: str | None
    message_id: str
    plaintext: bytes


def script_steps(script: Sequence[object]) -> Iterator[ScriptStep]:
    """The steps of a conversation script, in order, each checked before it is yielded.

    A step is ``{"send": "alice"|"bob", "id": ID, "plaintext": HEX}`` with an id not sent before,
    or ``{"deliver": ID}`` naming an earlier send; anything else raises :class:`VectorFormatError`.
    """
    sent: set[str] = set()
    for step in script:
        if not isinstance(step, Mapping):
            raise VectorFormatError("a script step is an object")
        if set(step) == {"send", "id", "plaintext"}:
            sender, message_id = step["send"], step["id"]
            if sender not in _PARTIES or not isinstance(message_id, str) or message_id in sent:
                raise VectorFormatError(f"bad send step {dict(step)!r}")
            plaintext = hex_bytes("plaintext", step["plaintext"])
            sent.add(message_id)
            yield ScriptStep(str(sender), message_id, plaintext)
        elif set(step) == {"deliver"}:
            message_id = step["deliver"]
            if not isinstance(message_id, str) or message_id not in sent:
                raise VectorFormatError(f"deliver names no earlier send: {step['deliver']!r}")
            yield ScriptStep(None, message_id, b"")
        else:
            raise VectorFormatError(f"unknown script step {dict(step)!r}")


class _Party:
    """One side of a scripted conversation: its keys, its seeded randomness and its session record."""

    def __init__(self, identity: KeyPair, registration_id: int, seed: bytes) -> None:
        self.identity = identity
        self.registration_id = registration_id
        self.rng = SeededRng(seed)
        self.record = SessionRecord()


def conversation(raw: Mapping[str, object]) -> Output:
    """A scripted conversation between Alice and Bob: every message's wire bytes and every delivery.

    Alice starts the session from Bob's bundle; then ``script`` runs in order.  A step
    ``{"send": "alice"|"bob", "id": ID, "plaintext": HEX}`` encrypts with the sender's record and
    outputs ``{"type": 2|3, "body": HEX}``; a step ``{"deliver": ID}`` hands that message's bytes to
    the other party and outputs ``{"plaintext": HEX}``, or ``{"error": NAME}`` when the core
    refuses it (a replay, for instance).  Bob's one-time prekey is used once and then deleted, as
    a client does.
    """
    inputs = Inputs(raw)
    alice = _Party(
        KeyPair(inputs.private_key("alice_identity_private")),
        inputs.integer("alice_registration_id"),
        inputs.hex("alice_rng_seed"),
    )
    bob = _Party(
        KeyPair(inputs.private_key("bob_identity_private")),
        inputs.integer("bob_registration_id"),
        inputs.hex("bob_rng_seed"),
    )
    bob_signed = KeyPair(inputs.private_key("bob_signed_pre_key_private"))
    one_time_private = inputs.optional_hex("bob_one_time_pre_key_private", 32)
    bob_one_time = None if one_time_private is None else KeyPair(PrivateKey(one_time_private))
    pre_key_id = inputs.optional_integer("pre_key_id")
    signed_pre_key_id = inputs.integer("signed_pre_key_id")
    signature_random = inputs.hex("signed_pre_key_signature_random", 64)
    script = inputs.sequence("script")
    inputs.done()
    if (pre_key_id is None) != (bob_one_time is None):
        raise VectorFormatError("pre_key_id and bob_one_time_pre_key_private come together")

    bundle = PreKeyBundle(
        registration_id=bob.registration_id,
        device_id=1,
        identity_key=bob.identity.public_key,
        signed_pre_key_id=signed_pre_key_id,
        signed_pre_key=bob_signed.public_key,
        signed_pre_key_signature=bob.identity.sign(
            bob_signed.public_key.serialize(), fixed_rng(signature_random)
        ),
        pre_key_id=pre_key_id,
        pre_key=None if bob_one_time is None else bob_one_time.public_key,
    )
    alice.record = SessionRecord.initiate(alice.identity, alice.registration_id, bundle, alice.rng)
    parties = {"alice": alice, "bob": bob}
    sent: dict[str, tuple[str, Ciphertext]] = {}
    steps: list[Output] = []
    for step in script_steps(script):
        if step.sender is not None:
            party = parties[step.sender]
            ciphertext = party.record.encrypt(step.plaintext, party.rng)
            sent[step.message_id] = (step.sender, ciphertext)
            steps.append({"type": int(ciphertext.type), "body": ciphertext.body.hex()})
        else:
            sender, ciphertext = sent[step.message_id]
            receiver = bob if sender == "alice" else alice
            try:
                if ciphertext.type == MessageType.PREKEY:
                    message = PreKeySignalMessage.deserialize(ciphertext.body)
                    one_time = bob_one_time if message.pre_key_id is not None else None
                    plaintext = receiver.record.decrypt_prekey_message(
                        message,
                        receiver.identity,
                        bob_signed,
                        one_time,
                        receiver.rng,
                        our_registration_id=receiver.registration_id,
                    )
                    if one_time is not None:
                        bob_one_time = None
                else:
                    plaintext = receiver.record.decrypt(ciphertext.body, receiver.rng)
            except E2EError as error:
                steps.append({"error": type(error).__name__})
            else:
                steps.append({"plaintext": plaintext.hex()})
    return {"steps": steps}


_FRAMINGS = {"libsignal": SenderKeyFraming.LIBSIGNAL, "axolotl": SenderKeyFraming.AXOLOTL}
_MAX_SENDER_KEY_MESSAGES = 100


def _no_rng(n: int) -> bytes:
    raise VectorFormatError(f"a sender-key case draws no randomness beyond its inputs (asked for {n} bytes)")


def sender_key(raw: Mapping[str, object]) -> Output:
    """One sender chain from a pinned chain key and signing key: its distribution message, then one
    group message per listed plaintext with its pinned signature randomness (see docs/vectors.md)."""
    inputs = Inputs(raw)
    framing = _FRAMINGS[inputs.choice("framing", tuple(_FRAMINGS))]
    distribution = inputs.optional_hex("distribution_id", 16)
    if (distribution is None) != (framing is SenderKeyFraming.AXOLOTL):
        raise VectorFormatError("distribution_id is given exactly in the libsignal framing")
    chain_id = inputs.integer("chain_id")
    iteration = inputs.integer("iteration")
    if chain_id > 0xFFFF_FFFF or iteration > 0xFFFF_FFFF - _MAX_SENDER_KEY_MESSAGES:
        raise VectorFormatError("chain_id and iteration are 32-bit, with room for the messages")
    chain_key = SenderChainKey(iteration, inputs.hex("chain_key", 32))
    signing = KeyPair(inputs.private_key("signing_private_key"))
    messages = inputs.sequence("messages")
    inputs.done()
    if not messages or len(messages) > _MAX_SENDER_KEY_MESSAGES:
        raise VectorFormatError(f"messages is a list of 1 to {_MAX_SENDER_KEY_MESSAGES} objects")
    name = SenderKeyName("sender", 1, uuid.UUID(bytes=distribution or bytes(16)))
    store = InMemorySenderKeyStore()
    store.store_sender_key(
        name, SenderKeyRecord([SenderKeyState(framing, chain_id, chain_key, signing.public_key, signing)])
    )
    cipher = GroupCipher(store, framing)
    offer = cipher.create_distribution_message(name, _no_rng)
    outputs: list[Output] = []
    for entry in messages:
        if not isinstance(entry, Mapping):
            raise VectorFormatError("each message is an object")
        message = Inputs(entry)
        plaintext = message.hex("plaintext")
        random = message.hex("signature_random", 64)
        message.done()
        iv, cipher_key = chain_key.message_key().iv_and_cipher_key
        outputs.append(
            {
                "iteration": chain_key.iteration,
                "chain_key": chain_key.key.hex(),
                "iv": iv.hex(),
                "cipher_key": cipher_key.hex(),
                "message": cipher.encrypt(name, plaintext, fixed_rng(random)).hex(),
            }
        )
        chain_key = chain_key.next()
    return {
        "signing_public_key": signing.public_key.serialize().hex(),
        "distribution_message": offer.serialize().hex(),
        "messages": outputs,
    }


_MAX_MEMBERSHIP_STEPS = 20


def group_membership(raw: Mapping[str, object]) -> Output:
    """A group's membership chain: each step a whole member list signed by one member's identity key
    with pinned signature randomness; outputs each change's bytes and digest (docs/vectors.md).  Every
    change is verified against the one before, as a member's client would."""
    inputs = Inputs(raw)
    group_id = inputs.hex("group_id", GROUP_ID_LENGTH)
    steps = inputs.sequence("steps")
    inputs.done()
    if not steps or len(steps) > _MAX_MEMBERSHIP_STEPS:
        raise VectorFormatError(f"steps is a list of 1 to {_MAX_MEMBERSHIP_STEPS} objects")
    previous: MembershipChange | None = None
    outputs: list[Output] = []
    for entry in steps:
        if not isinstance(entry, Mapping):
            raise VectorFormatError("each step is an object")
        step = Inputs(entry)
        signer = KeyPair(step.private_key("signer_private_key"))
        random = step.hex("signature_random", 64)
        members = []
        for item in step.sequence("members"):
            if not isinstance(item, Mapping):
                raise VectorFormatError("each member is an object")
            member = Inputs(item)
            try:
                members.append(
                    GroupMember(
                        member.text("name"), member.public_key("identity_key"), member.boolean("admin")
                    )
                )
            except ValueError as error:
                raise VectorFormatError(str(error)) from None
            member.done()
        step.done()
        try:
            if previous is None:
                change = create_membership(group_id, members, signer, fixed_rng(random))
            else:
                change = next_membership(previous, members, signer, fixed_rng(random))
        except (E2EError, ValueError) as error:
            raise VectorFormatError(f"a step does not make a valid change: {error}") from None
        verify_membership_change(change.serialized, previous)
        outputs.append(
            {"epoch": change.epoch, "change": change.serialized.hex(), "digest": change.digest.hex()}
        )
        previous = change
    return {"changes": outputs}


def kyber1024(raw: Mapping[str, object]) -> Output:
    """One record of the round-3 NIST KAT for Kyber1024 (``PQCkemKAT_3168.rsp``).

    The record's 48-byte ``seed`` seeds NIST's AES-256 CTR_DRBG, from which key generation draws
    ``d`` and ``z`` and encapsulation its 32 bytes, as ``PQCgenKAT_kem.c`` does.  The outputs are
    the SHA-256 digests of ``pk``, ``sk`` and ``ct`` and the shared secret ``ss``, which
    decapsulation must reproduce.
    """
    inputs = Inputs(raw)
    drbg = NistDrbg(inputs.hex("drbg_seed", 48))
    inputs.done()
    d, z = drbg(32), drbg(32)
    pk, sk = kyber.keygen_internal(d, z)
    ss, ct = kyber.encaps_internal(pk, drbg(32))
    if kyber.decaps_internal(sk, ct) != ss:
        raise VectorFormatError("decapsulation does not reproduce the shared secret")
    return {
        "pk_sha256": hashlib.sha256(pk).hexdigest(),
        "sk_sha256": hashlib.sha256(sk).hexdigest(),
        "ct_sha256": hashlib.sha256(ct).hexdigest(),
        "ss": ss.hex(),
    }


_MAX_ATTACHMENT_VECTOR = 1 << 20


def attachment(raw: Mapping[str, object]) -> Output:
    """Attachment encryption (key, iv, plaintext → blob, digest) or, when the inputs hold a blob,
    verification and decryption (key, digest, size, blob → plaintext, or the error that refuses it)."""
    inputs = Inputs(raw)
    key = AttachmentKey(inputs.hex("key", 64))
    if "blob" in raw:
        digest = inputs.hex("digest", 32)
        size = inputs.integer("size")
        blob = inputs.hex("blob")
        inputs.done()
        if size > _MAX_ATTACHMENT_VECTOR:
            raise VectorFormatError(f"attachment vectors stop at {_MAX_ATTACHMENT_VECTOR} bytes")
        try:
            return {"plaintext": decrypt_attachment(key, digest, size, blob).hex()}
        except E2EError as error:
            return {"error": type(error).__name__}
    iv = inputs.hex("iv", 16)
    plaintext = inputs.hex("plaintext")
    inputs.done()
    if len(plaintext) > _MAX_ATTACHMENT_VECTOR:
        raise VectorFormatError(f"attachment vectors stop at {_MAX_ATTACHMENT_VECTOR} bytes")
    encrypted = encrypt_attachment(key, iv, plaintext)
    return {
        "padded_size": padded_size(len(plaintext)),
        "blob_size": blob_size(len(plaintext)),
        "blob": encrypted.blob.hex(),
        "mac": encrypted.blob[-32:].hex(),
        "digest": encrypted.digest.hex(),
    }


def business_name(raw: Mapping[str, object]) -> Output:
    """Issuing a business-name certificate (directory_private, random, the fields → directory_public,
    certificate) or, when the inputs hold a certificate, verifying it for an account, identity key
    and time (→ the certified display name and validity, or the error that refuses it)."""
    inputs = Inputs(raw)
    account = inputs.optional_text("account")
    if account is None:
        raise VectorFormatError("missing input 'account'")
    if "certificate" in raw:
        certificate = inputs.hex("certificate")
        directory_public = inputs.public_key("directory_public")
        identity_public = inputs.public_key("identity_public")
        now = inputs.integer("now")
        inputs.done()
        try:
            name = verify_certificate(
                certificate, directory_public, account=account, identity_key=identity_public, now_ms=now
            )
        except E2EError as error:
            return {"error": type(error).__name__}
        return {"display_name": name.display_name, "not_before": name.not_before, "not_after": name.not_after}
    directory = KeyPair(inputs.private_key("directory_private"))
    random = inputs.hex("random", 64)
    identity_public = inputs.public_key("identity_public")
    display_name = inputs.optional_text("display_name")
    if display_name is None:
        raise VectorFormatError("missing input 'display_name'")
    not_before = inputs.integer("not_before")
    not_after = inputs.integer("not_after")
    inputs.done()
    name = BusinessName(account, identity_public, display_name, not_before, not_after)
    certificate = issue_certificate(directory, name, fixed_rng(random))
    return {"directory_public": directory.public_key.serialize().hex(), "certificate": certificate.hex()}


KINDS: dict[str, Kind] = {
    "xeddsa": xeddsa,
    "x3dh": x3dh,
    "pqxdh": pqxdh,
    "pqxdh_v4": pqxdh_v4,
    "kdf_root": kdf_root,
    "kdf_chain": kdf_chain,
    "message_keys": message_keys,
    "fingerprint": fingerprint,
    "conversation": conversation,
    "sender_key": sender_key,
    "kyber1024": kyber1024,
    "group_membership": group_membership,
    "attachment": attachment,
    "business_name": business_name,
}
