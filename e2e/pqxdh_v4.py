"""Signal's PQXDH as libsignal runs it for message version 4: X25519, SHA-256 and Kyber-1024.

What this module owns
---------------------
:func:`initiate` (Alice, PQXDH §3.3) and :func:`respond` (Bob, PQXDH §3.4) of the PQXDH that
libsignal and the Signal apps speak today, with :func:`kdf_pqxdh_v4`, its key derivation.  They
take the same :class:`~e2e.x3dh.PreKeyBundle` (with a signed :class:`~e2e.kyber.KyberPublicKey`
prekey) and give the same :class:`~e2e.x3dh.InitialMessage` and :class:`~e2e.x3dh.SharedSecret`
as :mod:`e2e.x3dh` and the project's own ML-KEM PQXDH (:mod:`e2e.pqxdh`), the secret carrying a
third key, ``pq_ratchet_key``.

Parameters (PQXDH §2.1), as libsignal fixes them
-----------------------------------------------
==========  ======================================================================
curve       curve25519; ``EncodeEC`` is ``0x05 ‖ u``
hash        SHA-256
pqkem       Kyber-1024, round 3 (:mod:`e2e.kyber`); ``EncodeKEM`` is ``0x08 ‖ pk``
info        ``"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"`` (:data:`PQXDH_V4_INFO`)
==========  ======================================================================

The computation (libsignal ``rust/protocol/src/pqxdh.rs``)
---------------------------------------------------------
::

    verify Sig(IK_B, EncodeEC(SPK_B)) and Sig(IK_B, EncodeKEM(PQPK_B))
    DH1 = DH(IK_A, SPK_B)    DH2 = DH(EK_A, IK_B)    DH3 = DH(EK_A, SPK_B)    DH4 = DH(EK_A, OPK_B)
    (CT, SS) = Kyber1024-ENC(PQPK_B)
    RK ‖ CK ‖ PQRK = HKDF-SHA256(salt = none, 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, info, 96)

HKDF without a salt is HKDF with 32 zero bytes (RFC 5869 §2.2).  ``RK`` and ``CK`` start the
Double Ratchet exactly as in version 3 (Alice's first ``KDF_RK`` with her ratchet key and
``SPK_B``; Bob's sending chain ``CK``).  ``PQRK`` is the third 32 bytes: libsignal gives it to
SPQR as its ``auth_key`` (``spqr::initial_state``, direction A2B for Alice and B2A for Bob).  The
root and chain derivations after the handshake are those of version 3 whether SPQR runs or not;
what SPQR changes is the message keys (:mod:`e2e.kdf`, ``ChainKey.message_keys``): its key for a
message becomes the HKDF salt of ``"WhisperMessageKeys"``.

Unlike the project's ML-KEM PQXDH, nothing is appended after ``SS``: round-3 Kyber already hashes
the public key and the ciphertext into its shared secret (``K = KDF(K̄ ‖ H(c))`` with
``K̄ ‖ r = G(m ‖ H(pk))``), which is what binds the session to the KEM prekey Alice verified.

Invariants
----------
* Alice verifies both signatures before any DH or encapsulation
  (:class:`~e2e.errors.InvalidSignatureError`); a bundle without a Kyber prekey raises
  :class:`~e2e.errors.DowngradeError` (version 4 has no PQXDH without it), one with an ML-KEM
  prekey :class:`~e2e.errors.InvalidKeyError`.
* Bob refuses a message without a Kyber ciphertext (:class:`~e2e.errors.DowngradeError`) and one
  whose Kyber prekey the caller could not find — unknown, or a one-time Kyber prekey already
  used — with :class:`~e2e.errors.UnknownPreKeyError`.  libsignal checks the base key's encoding
  first; :class:`~e2e.wire.PreKeySignalMessage` has already refused a non-canonical one.
* Randomness: Alice's base key and the encapsulation's 32 bytes both come from ``rng``, in that
  order, so a seeded ``rng`` reproduces a session start byte for byte.
* Nothing here keeps state.  A tampered Kyber ciphertext is not an error here (implicit
  rejection); the two sides then hold different keys and the first message's MAC fails.

What it does not know
---------------------
Where prekeys are stored or which are one-time: the caller looks Bob's keys up by the ids in the
message and deletes a one-time Kyber prekey once the first message has decrypted (a last-resort
one stays).  SPQR itself is :mod:`e2e.spqr`'s; this module only derives its starting key.
"""

from __future__ import annotations

from typing import Final

from e2e import kyber
from e2e.errors import DowngradeError, InvalidKeyError, UnknownPreKeyError
from e2e.explain import Trace, emit
from e2e.kdf import X3DH_DISCONTINUITY, ChainKey, RootKey, hkdf
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.kyber import KyberCiphertext, KyberKeyPair, KyberPublicKey
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret, initiator_dh, responder_dh

__all__ = ["PQXDH_V4_INFO", "kdf_pqxdh_v4", "initiate", "respond"]

PQXDH_V4_INFO: Final = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"
"""libsignal's HKDF info for PQXDH (PQXDH §2.2)."""

_NO_SALT: Final = b"\x00" * 32


def kdf_pqxdh_v4(dh_outputs: bytes, kyber_shared_secret: bytes) -> tuple[RootKey, ChainKey, bytes]:
    """``HKDF(none, 0xFF×32 ‖ DH1..DH4 ‖ SS, PQXDH_V4_INFO, 96)`` → ``RK``, ``CK`` (index 0), ``PQRK``.

    ``dh_outputs`` is ``DH1 ‖ DH2 ‖ DH3`` (``‖ DH4`` with a one-time prekey).
    """
    if len(kyber_shared_secret) != kyber.KYBER_SHARED_SECRET_LENGTH:
        raise InvalidKeyError(f"a Kyber shared secret is {kyber.KYBER_SHARED_SECRET_LENGTH} bytes")
    derived = hkdf(_NO_SALT, X3DH_DISCONTINUITY + dh_outputs + kyber_shared_secret, PQXDH_V4_INFO, 96)
    return RootKey(derived[:32]), ChainKey(derived[32:64], 0), derived[64:]


def _derive(
    dh_outputs: list[bytes],
    kyber_shared_secret: bytes,
    alice: PublicKey,
    bob: PublicKey,
    trace: Trace | None,
) -> SharedSecret:
    root_key, chain_key, pq_ratchet_key = kdf_pqxdh_v4(b"".join(dh_outputs), kyber_shared_secret)
    emit(
        trace,
        "pqxdh.kdf",
        {"inputs": len(dh_outputs) + 1, "info": PQXDH_V4_INFO.decode()},
        {"root_key": root_key.key, "chain_key": chain_key.key, "pq_ratchet_key": pq_ratchet_key},
    )
    return SharedSecret(root_key, chain_key, alice.serialize() + bob.serialize(), pq_ratchet_key)


def initiate(
    our_identity_key: KeyPair,
    their_bundle: PreKeyBundle,
    rng: Rng,
    trace: Trace | None = None,
) -> tuple[InitialMessage, SharedSecret]:
    """Alice's side (PQXDH §3.3, libsignal ``pqxdh_initiate``): verify the bundle's two
    signatures, draw ``EK_A`` and then the encapsulation's 32 bytes from ``rng``, and compute
    ``RK``, ``CK`` and ``PQRK``.

    Returns the header to send (with the Kyber prekey id and ciphertext) and the shared secret.
    """
    if their_bundle.kem_pre_key is None or their_bundle.kem_pre_key_id is None:
        raise DowngradeError("the bundle has no Kyber prekey: version 4 sessions need one")
    if not isinstance(their_bundle.kem_pre_key, KyberPublicKey):
        raise InvalidKeyError("Signal's PQXDH needs a Kyber1024 prekey (type 0x08), not ML-KEM-1024")
    kyber_pre_key = their_bundle.kem_pre_key
    our_base_key, dh_outputs = initiator_dh(our_identity_key, their_bundle, rng, trace)
    ciphertext, shared_secret = kyber.encapsulate(kyber_pre_key, rng)
    emit(
        trace,
        "pqxdh.kem",
        {
            "operation": "encapsulate",
            "kem": "Kyber1024",
            "kem_pre_key_id": their_bundle.kem_pre_key_id,
            "kem_pre_key": kyber_pre_key.fingerprint(),
        },
        {"shared_secret": shared_secret},
    )
    secret = _derive(dh_outputs, shared_secret, our_identity_key.public_key, their_bundle.identity_key, trace)
    message = InitialMessage.for_bundle(
        their_bundle, our_identity_key.public_key, our_base_key.public_key, ciphertext
    )
    return message, secret


def respond(
    our_identity_key: KeyPair,
    our_signed_pre_key: KeyPair,
    our_one_time_pre_key: KeyPair | None,
    our_kyber_pre_key: KyberKeyPair | None,
    message: InitialMessage,
    trace: Trace | None = None,
) -> SharedSecret:
    """Bob's side (PQXDH §3.4, libsignal ``pqxdh_accept``): the DH values from his private keys,
    then ``SS`` by decapsulating the message's Kyber ciphertext with the Kyber prekey it names.

    The caller has looked up ``our_signed_pre_key``, ``our_one_time_pre_key`` and
    ``our_kyber_pre_key`` by the ids in ``message``; ``None`` means the lookup found nothing.
    """
    if message.kem_ciphertext is None:
        raise DowngradeError("the initial message carries no Kyber ciphertext: it was not made with PQXDH")
    if not isinstance(message.kem_ciphertext, KyberCiphertext):
        raise InvalidKeyError("the initial message carries an ML-KEM ciphertext, not a Kyber1024 one")
    if our_kyber_pre_key is None:
        # InitialMessage carries a KEM prekey id exactly when it carries a KEM ciphertext.
        assert message.kem_pre_key_id is not None
        raise UnknownPreKeyError("Kyber prekey", message.kem_pre_key_id)
    if message.pre_key_id is not None and our_one_time_pre_key is None:
        raise UnknownPreKeyError("one-time prekey", message.pre_key_id)
    dh_outputs = responder_dh(our_identity_key, our_signed_pre_key, our_one_time_pre_key, message, trace)
    shared_secret = our_kyber_pre_key.decapsulate(message.kem_ciphertext)
    emit(
        trace,
        "pqxdh.kem",
        {
            "operation": "decapsulate",
            "kem": "Kyber1024",
            "kem_pre_key_id": message.kem_pre_key_id if message.kem_pre_key_id is not None else -1,
            "kem_pre_key": our_kyber_pre_key.public_key.fingerprint(),
        },
        {"shared_secret": shared_secret},
    )
    return _derive(dh_outputs, shared_secret, message.identity_key, our_identity_key.public_key, trace)
