"""X3DH key agreement with libsignal v3's constants (Signal's X3DH specification, revision 1).

What this module owns
---------------------
* :class:`PreKeyBundle`: what Bob publishes through the relay (X3DH §3.2): his identity key
  ``IK_B``, signed prekey ``SPK_B`` with its signature ``Sig(IK_B, Encode(SPK_B))``, and maybe
  one one-time prekey ``OPK_B``.  libsignal's registration and device ids travel with it.
* :class:`InitialMessage`: the X3DH header Alice sends with her first messages (X3DH §3.3):
  ``IK_A``, her ephemeral ("base") key ``EK_A`` and the ids of the prekeys she used.
* :class:`SharedSecret`: ``SK`` as libsignal v3 splits it, a :class:`~e2e.kdf.RootKey` and a
  :class:`~e2e.kdf.ChainKey`, with the associated data ``AD = Encode(IK_A) ‖ Encode(IK_B)``.
* :func:`initiate` (Alice, X3DH §3.3) and :func:`respond` (Bob, X3DH §3.4).  Each returns what
  its side needs and nothing more: the handshake hands the secret to the ratchet, which never
  sees a prekey.
* :func:`initiator_dh` and :func:`responder_dh`: the Diffie-Hellman half of each side, which
  :mod:`e2e.pqxdh` shares (PQXDH §3.3 and §3.4 compute the same DH1..DH4).

The bundle and the initial message also carry PQXDH's optional fields (a signed KEM prekey; a KEM
ciphertext and the KEM prekey's id): an ML-KEM-1024 prekey for the project's PQXDH
(:mod:`e2e.pqxdh`), or a Kyber1024 prekey for Signal's, message version 4 (:mod:`e2e.pqxdh_v4`).
X3DH refuses both: a bundle that advertises a KEM prekey must be used with PQXDH, and using it with
X3DH raises :class:`~e2e.errors.DowngradeError`, as does responding with X3DH to a PQXDH initial
message.

The computation
---------------
::

    DH1 = DH(IK_A, SPK_B)    DH2 = DH(EK_A, IK_B)    DH3 = DH(EK_A, SPK_B)    DH4 = DH(EK_A, OPK_B)
    RK ‖ CK = HKDF(salt = 0×32, 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], "WhisperText", 64)

Invariants
----------
* Alice verifies the signed prekey's signature before any Diffie-Hellman (X3DH §3.3), and the
  KEM prekey's when the bundle has one (PQXDH §3.3); a bad or missing signature raises
  :class:`~e2e.errors.InvalidSignatureError`.
* An all-zero DH output (a low-order key) raises :class:`~e2e.errors.InvalidKeyError`.
* Encoding: every public key is libsignal's ``0x05 ‖ u`` (X3DH §2.5 ``Encode``).

What it does not know
---------------------
Where the prekeys are stored, or that a one-time prekey must be deleted after use: the caller
looks up Bob's keys by the ids in :class:`InitialMessage` and deletes the one-time prekey once the
first message has decrypted.  Randomness (Alice's base key) comes from the ``rng`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.errors import DowngradeError, InvalidKeyError, InvalidSignatureError
from e2e.explain import Trace, emit
from e2e.kdf import ChainKey, RootKey, kdf_x3dh
from e2e.kem import KemCiphertext, KemPublicKey
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.kyber import KyberCiphertext, KyberPublicKey

__all__ = [
    "PreKeyBundle",
    "InitialMessage",
    "SharedSecret",
    "initiate",
    "respond",
    "initiator_dh",
    "responder_dh",
]


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """Bob's published keys, as Alice receives them (X3DH §3.2, PQXDH §3.2).

    The ``kem_`` fields are PQXDH's signed KEM prekey ``PQPK_B``: a one-time KEM prekey when the
    relay had one, otherwise Bob's last-resort KEM prekey (Alice cannot tell which, and need not).
    It is an ML-KEM-1024 key (type byte ``0x0A``) for the project's PQXDH or a Kyber1024 key
    (``0x08``) for Signal's v4 PQXDH.  Its signature is ``Sig(IK_B, EncodeKEM(PQPK_B))``, XEdDSA
    over the key's type-prefixed encoding, as libsignal signs its Kyber prekeys.
    """

    registration_id: int
    device_id: int
    identity_key: PublicKey
    signed_pre_key_id: int
    signed_pre_key: PublicKey
    signed_pre_key_signature: bytes
    pre_key_id: int | None = None
    pre_key: PublicKey | None = None
    kem_pre_key_id: int | None = None
    kem_pre_key: KemPublicKey | KyberPublicKey | None = None
    kem_pre_key_signature: bytes | None = None

    def __post_init__(self) -> None:
        if (self.pre_key_id is None) != (self.pre_key is None):
            raise InvalidKeyError("a one-time prekey needs both its id and its key")
        if (self.kem_pre_key_id is None) != (self.kem_pre_key is None):
            raise InvalidKeyError("a KEM prekey needs both its id and its key")
        if self.kem_pre_key is None and self.kem_pre_key_signature is not None:
            raise InvalidKeyError("a KEM prekey signature without a KEM prekey")

    def verify(self) -> None:
        """Check ``Sig(IK_B, Encode(SPK_B))`` and, if there is a KEM prekey,
        ``Sig(IK_B, EncodeKEM(PQPK_B))``; raises :class:`~e2e.errors.InvalidSignatureError`.
        """
        self.identity_key.verify(self.signed_pre_key.serialize(), self.signed_pre_key_signature)
        if self.kem_pre_key is not None:
            if self.kem_pre_key_signature is None:
                raise InvalidSignatureError("the KEM prekey carries no signature")
            self.identity_key.verify(self.kem_pre_key.serialize(), self.kem_pre_key_signature)


@dataclass(frozen=True, slots=True)
class InitialMessage:
    """The key-agreement fields of Alice's initial message (X3DH §3.3, PQXDH §3.3), as a
    PreKeySignalMessage carries them.  The ``kem_`` fields are present exactly when PQXDH made it.
    """

    identity_key: PublicKey
    base_key: PublicKey
    signed_pre_key_id: int
    pre_key_id: int | None = None
    kem_pre_key_id: int | None = None
    kem_ciphertext: KemCiphertext | KyberCiphertext | None = None

    def __post_init__(self) -> None:
        if (self.kem_pre_key_id is None) != (self.kem_ciphertext is None):
            raise InvalidKeyError("a KEM ciphertext needs the id of the KEM prekey it was made for")

    @classmethod
    def for_bundle(
        cls,
        their_bundle: PreKeyBundle,
        our_identity_key: PublicKey,
        our_base_key: PublicKey,
        kem_ciphertext: KemCiphertext | KyberCiphertext | None = None,
    ) -> InitialMessage:
        """Alice's message for ``their_bundle`` (X3DH §3.3, PQXDH §3.3): her identity and base keys,
        the ids of the bundle's prekeys she used, and with ``kem_ciphertext`` its KEM prekey's id.
        """
        return cls(
            identity_key=our_identity_key,
            base_key=our_base_key,
            signed_pre_key_id=their_bundle.signed_pre_key_id,
            pre_key_id=their_bundle.pre_key_id,
            kem_pre_key_id=their_bundle.kem_pre_key_id if kem_ciphertext is not None else None,
            kem_ciphertext=kem_ciphertext,
        )


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """``SK`` split as libsignal v3 does, and ``AD = Encode(IK_A) ‖ Encode(IK_B)`` (X3DH §3.3).

    Signal's v4 PQXDH (:mod:`e2e.pqxdh_v4`) derives a third key, ``pq_ratchet_key``: the
    authentication key that starts the session's post-quantum ratchet (SPQR).  It is ``None`` for
    every other agreement.
    """

    root_key: RootKey
    chain_key: ChainKey
    associated_data: bytes
    pq_ratchet_key: bytes | None = None

    def __repr__(self) -> str:
        return "SharedSecret(<redacted>)"


def _derive(dh_outputs: list[bytes], alice: PublicKey, bob: PublicKey, trace: Trace | None) -> SharedSecret:
    root_key, chain_key = kdf_x3dh(b"".join(dh_outputs))
    emit(
        trace,
        "x3dh.kdf",
        {"inputs": len(dh_outputs), "info": "WhisperText"},
        {"root_key": root_key.key, "chain_key": chain_key.key},
    )
    return SharedSecret(root_key, chain_key, alice.serialize() + bob.serialize())


def initiator_dh(
    our_identity_key: KeyPair,
    their_bundle: PreKeyBundle,
    rng: Rng,
    trace: Trace | None = None,
) -> tuple[KeyPair, list[bytes]]:
    """Alice's common first half of X3DH and PQXDH (§3.3 of both): verify every signature in the
    bundle, draw ``EK_A`` from ``rng`` and compute ``[DH1, DH2, DH3]`` (``+ [DH4]``).

    Returns her base key pair and the DH outputs in order.
    """
    their_bundle.verify()
    emit(
        trace,
        "x3dh.bundle_verified",
        {
            "identity_key": their_bundle.identity_key.fingerprint(),
            "signed_pre_key": their_bundle.signed_pre_key.fingerprint(),
            "signed_pre_key_id": their_bundle.signed_pre_key_id,
            "one_time_pre_key": their_bundle.pre_key.fingerprint() if their_bundle.pre_key else "none",
            "kem_pre_key": their_bundle.kem_pre_key.fingerprint() if their_bundle.kem_pre_key else "none",
        },
    )
    our_base_key = KeyPair.generate(rng)
    emit(trace, "x3dh.base_key", {"base_key": our_base_key.public_key.fingerprint()})
    dh_outputs = [
        our_identity_key.agree(their_bundle.signed_pre_key),
        our_base_key.agree(their_bundle.identity_key),
        our_base_key.agree(their_bundle.signed_pre_key),
    ]
    if their_bundle.pre_key is not None:
        dh_outputs.append(our_base_key.agree(their_bundle.pre_key))
    _emit_dh(dh_outputs, trace)
    return our_base_key, dh_outputs


def responder_dh(
    our_identity_key: KeyPair,
    our_signed_pre_key: KeyPair,
    our_one_time_pre_key: KeyPair | None,
    message: InitialMessage,
    trace: Trace | None = None,
) -> list[bytes]:
    """Bob's common first half of X3DH and PQXDH (§3.4 of both): the same DH values from his
    private keys.  A one-time prekey that the message names but the caller could not supply
    (or the reverse) raises :class:`~e2e.errors.InvalidKeyError`.
    """
    if (message.pre_key_id is None) != (our_one_time_pre_key is None):
        raise InvalidKeyError("the one-time prekey does not match the initial message")
    dh_outputs = [
        our_signed_pre_key.agree(message.identity_key),
        our_identity_key.agree(message.base_key),
        our_signed_pre_key.agree(message.base_key),
    ]
    if our_one_time_pre_key is not None:
        dh_outputs.append(our_one_time_pre_key.agree(message.base_key))
    _emit_dh(dh_outputs, trace)
    return dh_outputs


def _emit_dh(dh_outputs: list[bytes], trace: Trace | None) -> None:
    for number, output in enumerate(dh_outputs, start=1):
        emit(trace, "x3dh.dh", {"name": f"DH{number}"}, {"output": output})


def initiate(
    our_identity_key: KeyPair,
    their_bundle: PreKeyBundle,
    rng: Rng,
    trace: Trace | None = None,
) -> tuple[InitialMessage, SharedSecret]:
    """Alice's side (X3DH §3.3): verify the bundle, draw ``EK_A`` from ``rng``, compute ``SK``.

    Returns the header to send and the shared secret for the ratchet.  A bundle with a KEM
    prekey raises :class:`~e2e.errors.DowngradeError`: Bob asked for PQXDH (:mod:`e2e.pqxdh`).
    """
    if their_bundle.kem_pre_key is not None:
        raise DowngradeError("the bundle advertises a KEM prekey: start this session with PQXDH, not X3DH")
    our_base_key, dh_outputs = initiator_dh(our_identity_key, their_bundle, rng, trace)
    secret = _derive(dh_outputs, our_identity_key.public_key, their_bundle.identity_key, trace)
    message = InitialMessage.for_bundle(their_bundle, our_identity_key.public_key, our_base_key.public_key)
    return message, secret


def respond(
    our_identity_key: KeyPair,
    our_signed_pre_key: KeyPair,
    our_one_time_pre_key: KeyPair | None,
    message: InitialMessage,
    trace: Trace | None = None,
) -> SharedSecret:
    """Bob's side (X3DH §3.4): the same four DH values from his private keys.

    The caller has looked up ``our_signed_pre_key`` and ``our_one_time_pre_key`` by the ids in
    ``message``; passing ``None`` for a message that names a one-time prekey is an error.  A
    message that carries a KEM ciphertext was made with PQXDH and raises
    :class:`~e2e.errors.DowngradeError` here (use :func:`e2e.pqxdh.respond`).
    """
    if message.kem_ciphertext is not None:
        raise DowngradeError("the initial message was made with PQXDH: respond with PQXDH, not X3DH")
    dh_outputs = responder_dh(our_identity_key, our_signed_pre_key, our_one_time_pre_key, message, trace)
    return _derive(dh_outputs, message.identity_key, our_identity_key.public_key, trace)
