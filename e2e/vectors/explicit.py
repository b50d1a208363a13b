"""Vector kinds that take every key as given (format version 2), so that vectors published by other
implementations can be written as they are.

``x3dh_responder``
    Bob's side only: his private keys and what Alice sent (a whole PreKeySignalMessage, or just her
    identity and base keys and, optionally, her first SignalMessage) give the shared secret, the DH
    values and the plaintext.  No bundle, no signature, no invented ids.

``explicit_conversation``
    A whole conversation in which every private key is an input: both identities, Bob's prekeys,
    Alice's base key, and each party's ratchet keys as a list, consumed in the order the party
    generates them (Alice's first ratchet key at her session's start, every other one at the first
    send after a new remote ratchet key).  The signed prekey's signature is an input too (as
    published), not randomness.  libsignal v3 derives each message's AES key, MAC key and IV from
    the chain key (``HKDF(0×32, HMAC(CK, 0x01), "WhisperMessageKeys", 80)``), so once the keys are
    given nothing else influences the IV.  Each send step outputs the wire bytes and everything
    they are made of (ratchet key, counters, AES ciphertext, MAC, the message keys, the chain key
    and the root key after the step), so a vector states as much of it as its source publishes.

    ``start`` is ``"bundle"`` (default: Alice verifies Bob's bundle and sends PreKeySignalMessages
    until she hears back, as libsignal's ``SessionBuilder`` does) or ``"ratchet"`` (both states are
    built straight from the X3DH secret, as libsignal's ``RatchetingSession`` tests do: Alice's
    messages are SignalMessages from the first, and no signature is needed).

A refusal by the core becomes the output ``error`` (the exception's name); a case that does not
fit its kind (a list of keys that runs out, randomness asked for where none is given) stays a
:class:`~e2e.vectors.VectorFormatError`.

What this module does not do: choose keys.  A list of ratchet keys that runs out is a format error;
keys left over are not (a source may list a key its implementation drew where ours draws none yet:
this project draws the sending ratchet key at the next send, not on receipt), and the outputs
``alice_ratchet_keys_used`` and ``bob_ratchet_keys_used`` say how many were drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from e2e import pqxdh, x3dh
from e2e.errors import E2EError
from e2e.explain import Event
from e2e.kem import KemCiphertext, KemKeyPair, KemPrivateKey
from e2e.keys import KeyPair, PrivateKey
from e2e.ratchet import Agreement, PendingPreKey, RatchetState
from e2e.session import SessionRecord
from e2e.vectors import VectorFormatError
from e2e.vectors.kinds import Inputs, Output, hex_bytes, script_steps
from e2e.wire import MAC_LENGTH, MessageType, PreKeySignalMessage, SignalMessage
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret

__all__ = [
    "x3dh_responder",
    "explicit_conversation",
    "RESPONDER_INPUTS",
    "RESPONDER_OUTPUTS",
    "CONVERSATION_INPUTS",
    "CONVERSATION_OUTPUTS",
]

RESPONDER_INPUTS = frozenset(
    [
        "bob_identity_private",
        "bob_signed_pre_key_private",
        "bob_one_time_pre_key_private",
        "bob_kem_pre_key_seed",
        "bob_registration_id",
        "prekey_message",
        "alice_identity_public",
        "alice_base_public",
        "kem_ciphertext",
        "signal_message",
    ]
)
RESPONDER_OUTPUTS = frozenset(
    [
        "alice_identity_public",
        "alice_base_public",
        "bob_identity_public",
        "bob_signed_pre_key_public",
        "bob_one_time_pre_key_public",
        "bob_kem_pre_key_public",
        "agreement",
        "dh1",
        "dh2",
        "dh3",
        "dh4",
        "kem_shared_secret",
        "root_key",
        "chain_key",
        "associated_data",
        "registration_id",
        "pre_key_id",
        "signed_pre_key_id",
        "kem_pre_key_id",
        "plaintext",
        "error",
    ]
)
CONVERSATION_INPUTS = frozenset(
    [
        "start",
        "alice_identity_private",
        "alice_base_private",
        "alice_registration_id",
        "alice_ratchet_privates",
        "bob_identity_private",
        "bob_signed_pre_key_private",
        "signed_pre_key_id",
        "signed_pre_key_signature",
        "bob_one_time_pre_key_private",
        "pre_key_id",
        "bob_registration_id",
        "bob_ratchet_privates",
        "script",
    ]
)
CONVERSATION_OUTPUTS = frozenset(
    [
        "alice_identity_public",
        "alice_base_public",
        "bob_identity_public",
        "bob_signed_pre_key_public",
        "bob_one_time_pre_key_public",
        "alice_ratchet_publics",
        "bob_ratchet_publics",
        "root_key",
        "chain_key",
        "associated_data",
        "alice_ratchet_keys_used",
        "bob_ratchet_keys_used",
        "steps",
    ]
)


def _no_rng(n: int) -> bytes:
    raise VectorFormatError(f"a responder draws no randomness, yet {n} bytes were asked for")


def _agreement_outputs(events: list[Event], secret: SharedSecret) -> Output:
    output: Output = {}
    for event in events:
        if event.step == "x3dh.dh":
            output[str(event.public["name"]).lower()] = event.secret["output"].hex()
        elif event.step == "pqxdh.kem":
            output["kem_shared_secret"] = event.secret["shared_secret"].hex()
    output["root_key"] = secret.root_key.key.hex()
    output["chain_key"] = secret.chain_key.key.hex()
    output["associated_data"] = secret.associated_data.hex()
    return output


def x3dh_responder(raw: Mapping[str, object]) -> Output:
    """Bob's side of X3DH or PQXDH from his private keys and Alice's message (module docstring)."""
    inputs = Inputs(raw)
    bob_identity = KeyPair(inputs.private_key("bob_identity_private"))
    bob_signed = KeyPair(inputs.private_key("bob_signed_pre_key_private"))
    one_time_private = inputs.optional_hex("bob_one_time_pre_key_private", 32)
    bob_one_time = None if one_time_private is None else KeyPair(PrivateKey(one_time_private))
    kem_seed = inputs.optional_hex("bob_kem_pre_key_seed", 64)
    bob_kem = None if kem_seed is None else KemKeyPair(KemPrivateKey(kem_seed))
    bob_registration_id = inputs.optional_integer("bob_registration_id")
    prekey_bytes = inputs.optional_hex("prekey_message")
    output: Output = {
        "bob_identity_public": bob_identity.public_key.serialize().hex(),
        "bob_signed_pre_key_public": bob_signed.public_key.serialize().hex(),
    }
    if bob_one_time is not None:
        output["bob_one_time_pre_key_public"] = bob_one_time.public_key.serialize().hex()
    if bob_kem is not None:
        output["bob_kem_pre_key_public"] = bob_kem.public_key.serialize().hex()
    prekey_message: PreKeySignalMessage | None = None
    signal_bytes: bytes | None = None
    if prekey_bytes is not None:
        inputs.done()
        try:
            prekey_message = PreKeySignalMessage.deserialize(prekey_bytes)
        except VectorFormatError:
            raise
        except E2EError as error:
            return {**output, "plaintext": None, "error": type(error).__name__}
        initial = prekey_message.initial_message()
        output.update(
            registration_id=prekey_message.registration_id,
            pre_key_id=prekey_message.pre_key_id,
            signed_pre_key_id=prekey_message.signed_pre_key_id,
            kem_pre_key_id=prekey_message.kem_pre_key_id,
        )
    else:
        alice_identity = inputs.public_key("alice_identity_public")
        alice_base = inputs.public_key("alice_base_public")
        kem_bytes = inputs.optional_hex("kem_ciphertext")
        signal_bytes = inputs.optional_hex("signal_message")
        inputs.done()
        try:
            kem_ciphertext = None if kem_bytes is None else KemCiphertext.deserialize(kem_bytes)
        except VectorFormatError:
            raise
        except E2EError as error:
            return {**output, "plaintext": None, "error": type(error).__name__}
        # Without a PreKeySignalMessage there are no ids: the prekeys given are the ones used.
        initial = InitialMessage(
            identity_key=alice_identity,
            base_key=alice_base,
            signed_pre_key_id=0,
            pre_key_id=None if bob_one_time is None else 0,
            kem_pre_key_id=None if kem_ciphertext is None else 0,
            kem_ciphertext=kem_ciphertext,
        )
    output["alice_identity_public"] = initial.identity_key.serialize().hex()
    output["alice_base_public"] = initial.base_key.serialize().hex()
    events: list[Event] = []
    agreement: Agreement = "pqxdh" if initial.kem_ciphertext is not None else "x3dh"
    output["agreement"] = agreement
    try:
        if agreement == "pqxdh":
            secret = pqxdh.respond(bob_identity, bob_signed, bob_one_time, bob_kem, initial, events.append)
        else:
            secret = x3dh.respond(bob_identity, bob_signed, bob_one_time, initial, events.append)
    except VectorFormatError:
        raise
    except E2EError as error:
        return {**output, "plaintext": None, "error": type(error).__name__}
    output.update(_agreement_outputs(events, secret))
    try:
        if prekey_message is not None:
            plaintext: bytes | None = SessionRecord().decrypt_prekey_message(
                prekey_message,
                bob_identity,
                bob_signed,
                bob_one_time,
                _no_rng,
                # The registration id is recorded in the state and influences no byte here.
                our_registration_id=bob_registration_id or 0,
                our_kem_pre_key=bob_kem,
            )
        elif signal_bytes is not None:
            state = RatchetState.initialize_bob(
                secret,
                bob_identity.public_key,
                initial.identity_key,
                bob_signed,
                initial.base_key,
                bob_registration_id or 0,
                0,
                agreement=agreement,
            )
            plaintext = state.decrypt(SignalMessage.deserialize(signal_bytes), _no_rng)
        else:
            plaintext = None
    except VectorFormatError:
        raise
    except E2EError as error:
        return {**output, "plaintext": None, "error": type(error).__name__}
    output["plaintext"] = None if plaintext is None else plaintext.hex()
    output["error"] = None
    return output


class _KeyQueue:
    """A party's rng: the given private keys, one per 32-byte request, in order."""

    def __init__(self, party: str, keys: list[bytes]) -> None:
        self.party = party
        self.keys = keys
        self.used = 0

    def __call__(self, n: int) -> bytes:
        if n != 32:
            raise VectorFormatError(f"{self.party} was asked for {n} random bytes; only keys are given")
        if self.used == len(self.keys):
            raise VectorFormatError(f"{self.party} needs more than the {len(self.keys)} ratchet keys given")
        self.used += 1
        return self.keys[self.used - 1]


def _key_list(inputs: Inputs, name: str) -> list[bytes]:
    return [hex_bytes(f"{name}[{index}]", value, 32) for index, value in enumerate(inputs.sequence(name))]


class _Side:
    """One party: either a :class:`SessionRecord` (``start = "bundle"``) or a bare state (``"ratchet"``)."""

    def __init__(self, rng: _KeyQueue) -> None:
        self.rng = rng
        self.record: SessionRecord | None = None
        self.state: RatchetState | None = None

    def current(self) -> RatchetState:
        state = self.record.current_state if self.record is not None else self.state
        if state is None:
            raise VectorFormatError(f"{self.rng.party} has no session to send with")
        return state

    def encrypt(self, plaintext: bytes, trace: Callable[[Event], None]) -> tuple[int, bytes]:
        if self.record is not None:
            ciphertext = self.record.encrypt(plaintext, self.rng, trace)
            return int(ciphertext.type), ciphertext.body
        return int(MessageType.WHISPER), self.current().encrypt(plaintext, self.rng, trace)

    def decrypt(self, body: bytes) -> bytes:
        if self.record is not None:
            return self.record.decrypt(body, self.rng)
        return self.current().decrypt(SignalMessage.deserialize(body), self.rng)


def _send_output(message_type: int, body: bytes, events: list[Event], state: RatchetState) -> Output:
    inner = PreKeySignalMessage.deserialize(body).message if message_type == MessageType.PREKEY else None
    signal = inner if inner is not None else SignalMessage.deserialize(body)
    keys = next(event.secret["message_keys"] for event in events if event.step == "ratchet.message_key")
    chain_key = next(event.secret["chain_key"] for event in events if event.step == "ratchet.chain_step")
    return {
        "type": message_type,
        "body": body.hex(),
        "ratchet_key": signal.ratchet_key.serialize().hex(),
        "counter": signal.counter,
        "previous_counter": signal.previous_counter,
        "ciphertext": signal.ciphertext.hex(),
        "mac": signal.serialized[-MAC_LENGTH:].hex(),
        "cipher_key": keys[:32].hex(),
        "mac_key": keys[32:64].hex(),
        "iv": keys[64:80].hex(),
        "chain_key": chain_key.hex(),
        "root_key": state.root_key.hex(),
    }


def explicit_conversation(raw: Mapping[str, object]) -> Output:
    """A scripted conversation in which every private key is given (module docstring).

    The script's steps are those of the ``conversation`` kind: ``{"send": "alice"|"bob", "id": ID,
    "plaintext": HEX}`` and ``{"deliver": ID}``.  A delivery outputs ``{"plaintext": HEX, "error":
    null}``, or ``{"plaintext": null, "error": NAME}`` when the core refuses the message.
    """
    inputs = Inputs(raw)
    start = inputs.optional_text("start") or "bundle"
    if start not in ("bundle", "ratchet"):
        raise VectorFormatError('start is "bundle" or "ratchet"')
    alice_identity = KeyPair(inputs.private_key("alice_identity_private"))
    alice_base = KeyPair(inputs.private_key("alice_base_private"))
    alice_registration_id = inputs.integer("alice_registration_id")
    alice_keys = _key_list(inputs, "alice_ratchet_privates")
    bob_identity = KeyPair(inputs.private_key("bob_identity_private"))
    bob_signed = KeyPair(inputs.private_key("bob_signed_pre_key_private"))
    signed_pre_key_id = inputs.integer("signed_pre_key_id")
    signature = inputs.optional_hex("signed_pre_key_signature", 64)
    one_time_private = inputs.optional_hex("bob_one_time_pre_key_private", 32)
    bob_one_time = None if one_time_private is None else KeyPair(PrivateKey(one_time_private))
    pre_key_id = inputs.optional_integer("pre_key_id")
    bob_registration_id = inputs.integer("bob_registration_id")
    bob_keys = _key_list(inputs, "bob_ratchet_privates")
    script = inputs.sequence("script")
    inputs.done()
    if (pre_key_id is None) != (bob_one_time is None):
        raise VectorFormatError("pre_key_id and bob_one_time_pre_key_private come together")
    if (start == "bundle") != (signature is not None):
        raise VectorFormatError('signed_pre_key_signature is given exactly when start is "bundle"')

    alice = _Side(_KeyQueue("alice", alice_keys))
    bob = _Side(_KeyQueue("bob", bob_keys))
    output: Output = {
        "alice_identity_public": alice_identity.public_key.serialize().hex(),
        "alice_base_public": alice_base.public_key.serialize().hex(),
        "bob_identity_public": bob_identity.public_key.serialize().hex(),
        "bob_signed_pre_key_public": bob_signed.public_key.serialize().hex(),
        "alice_ratchet_publics": [PrivateKey(key).public_key().serialize().hex() for key in alice_keys],
        "bob_ratchet_publics": [PrivateKey(key).public_key().serialize().hex() for key in bob_keys],
    }
    if bob_one_time is not None:
        output["bob_one_time_pre_key_public"] = bob_one_time.public_key.serialize().hex()
    initial = InitialMessage(
        identity_key=alice_identity.public_key,
        base_key=alice_base.public_key,
        signed_pre_key_id=signed_pre_key_id,
        pre_key_id=pre_key_id,
    )
    secret = x3dh.respond(bob_identity, bob_signed, bob_one_time, initial)
    output.update(
        root_key=secret.root_key.key.hex(),
        chain_key=secret.chain_key.key.hex(),
        associated_data=secret.associated_data.hex(),
    )
    if start == "bundle" and signature is not None:
        bundle = PreKeyBundle(
            registration_id=bob_registration_id,
            device_id=1,
            identity_key=bob_identity.public_key,
            signed_pre_key_id=signed_pre_key_id,
            signed_pre_key=bob_signed.public_key,
            signed_pre_key_signature=signature,
            pre_key_id=pre_key_id,
            pre_key=None if bob_one_time is None else bob_one_time.public_key,
        )
        base_then_ratchet = _KeyQueue("alice", [alice_base.private_key.serialize(), *alice_keys])
        alice.rng = base_then_ratchet
        alice.record = SessionRecord.initiate(
            alice_identity, alice_registration_id, bundle, base_then_ratchet
        )
        bob.record = SessionRecord()
    else:
        alice.state = RatchetState.initialize_alice(
            secret,
            alice_identity.public_key,
            bob_identity.public_key,
            bob_signed.public_key,
            alice_base.public_key,
            PendingPreKey(pre_key_id, signed_pre_key_id, alice_base.public_key),
            alice_registration_id,
            bob_registration_id,
            alice.rng,
        )
        # As in libsignal's RatchetingSession tests: a state built straight from the X3DH secret,
        # which sends SignalMessages from its first message on.
        alice.state.pending_prekey = None
        bob.state = RatchetState.initialize_bob(
            secret,
            bob_identity.public_key,
            alice_identity.public_key,
            bob_signed,
            alice_base.public_key,
            bob_registration_id,
            alice_registration_id,
        )
    parties = {"alice": alice, "bob": bob}
    sent: dict[str, tuple[str, int, bytes]] = {}
    steps: list[Output] = []
    for step in script_steps(script):
        if step.sender is not None:
            party = parties[step.sender]
            events: list[Event] = []
            message_type, body = party.encrypt(step.plaintext, events.append)
            sent[step.message_id] = (step.sender, message_type, body)
            steps.append(_send_output(message_type, body, events, party.current()))
        else:
            sender, message_type, body = sent[step.message_id]
            receiver = bob if sender == "alice" else alice
            try:
                if message_type == MessageType.PREKEY:
                    if receiver.record is None:
                        raise VectorFormatError("only a bundle-started session sends PreKeySignalMessages")
                    message = PreKeySignalMessage.deserialize(body)
                    one_time = bob_one_time if message.pre_key_id == pre_key_id else None
                    if message.pre_key_id is None:
                        one_time = None
                    received = receiver.record.decrypt_prekey_message(
                        message,
                        bob_identity,
                        bob_signed,
                        one_time,
                        receiver.rng,
                        our_registration_id=bob_registration_id,
                    )
                    if one_time is not None:
                        # Used once, then deleted, as a client does.
                        bob_one_time = None
                else:
                    received = receiver.decrypt(body)
            except VectorFormatError:
                raise
            except E2EError as error:
                steps.append({"plaintext": None, "error": type(error).__name__})
            else:
                steps.append({"plaintext": received.hex(), "error": None})
    output["alice_ratchet_keys_used"] = alice.rng.used - (1 if alice.record is not None else 0)
    output["bob_ratchet_keys_used"] = bob.rng.used
    output["steps"] = steps
    return output
