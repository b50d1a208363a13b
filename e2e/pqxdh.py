"""PQXDH key agreement with ML-KEM-1024 (Signal's PQXDH specification, revision 3).

What this module owns
---------------------
:func:`initiate` (Alice, PQXDH §3.3) and :func:`respond` (Bob, PQXDH §3.4).  They take the same
:class:`~e2e.x3dh.PreKeyBundle` and produce the same :class:`~e2e.x3dh.InitialMessage` and
:class:`~e2e.x3dh.SharedSecret` types as X3DH, with the bundle's and the message's ``kem_`` fields
filled in, so the Double Ratchet consumes the result unchanged.

Parameters (PQXDH §2.1)
-----------------------
==========  ======================================================================
curve       curve25519; ``EncodeEC`` is libsignal's ``0x05 ‖ u``
hash        SHA-256
pqkem       ML-KEM-1024 (FIPS 203); ``EncodeKEM`` is ``0x0A ‖ ek`` (:mod:`e2e.kem`)
info        ``"e2e-relay_PQXDH_CURVE25519_SHA-256_ML-KEM-1024"`` (:data:`PQXDH_INFO`)
==========  ======================================================================

The info string identifies this application and names the curve, hash and KEM, as §2.1 and §2.2
ask, and it differs from libsignal's (``"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"``): the
two protocols are not compatible (libsignal's KEM is the pre-standard Kyber1024), so their keys
must never coincide even by construction.

The computation
---------------
::

    verify Sig(IK_B, EncodeEC(SPK_B)) and Sig(IK_B, EncodeKEM(PQPK_B))
    DH1 = DH(IK_A, SPK_B)    DH2 = DH(EK_A, IK_B)    DH3 = DH(EK_A, SPK_B)    DH4 = DH(EK_A, OPK_B)
    (CT, SS) = PQKEM-ENC(PQPK_B)
    RK ‖ CK = HKDF(salt = 0×32, 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS ‖ EncodeKEM(PQPK_B), info, 64)
    AD = EncodeEC(IK_A) ‖ EncodeEC(IK_B)

Up to ``SS`` this is §3.3 verbatim, with libsignal's split of the 64 output bytes into the first
root and chain keys.  The last KDF input, ``EncodeKEM(PQPK_B)``, is ours.  PQXDH's security
arguments (§4, and the formal analyses of the protocol) need the session key to be bound to the
KEM public key Alice verified and encapsulated to.  Round-3 Kyber hashed the public key and the
ciphertext into its shared secret; FIPS 203 ML-KEM hashes ``H(ek)`` only, read from the
decapsulation key, which binds honestly generated keys but not adversarially built ones (the
"MAL-BIND" notions of the KEM binding literature).  Rather than lean on the KEM, we put Bob's
encoded KEM prekey into the KDF input: both sides must then agree on ``PQPK_B`` for the first
message to authenticate, whatever the KEM's binding properties, for the cost of hashing 1569
more bytes once per session.  Every input has a fixed length, so the concatenation stays
unambiguous with or without DH4.

Invariants
----------
* Alice verifies both signatures before any DH or encapsulation; a bad or missing signature
  raises :class:`~e2e.errors.InvalidSignatureError`.
* :func:`initiate` needs a bundle with a KEM prekey (:class:`~e2e.errors.InvalidKeyError`
  otherwise); :func:`e2e.x3dh.initiate` refuses one (:class:`~e2e.errors.DowngradeError`).
  :func:`respond` needs a message with a KEM ciphertext (:class:`~e2e.errors.DowngradeError`
  otherwise) and the KEM prekey it names (:class:`~e2e.errors.InvalidKeyError` when the caller's
  lookup found none: unknown, or a one-time KEM prekey already used).
* Nothing here keeps state: a failure leaves nothing behind.  A tampered KEM ciphertext is *not*
  an error here (ML-KEM's implicit rejection returns an unrelated secret); the two sides then
  hold different keys and the first message's MAC fails.

What it does not know
---------------------
Where prekeys are stored, which KEM prekeys are one-time and which last-resort, or that a
one-time KEM prekey must be deleted after use (PQXDH §3.4): the caller looks Bob's keys up by the
ids in the message and deletes the one-time ones once the first message has decrypted.
"""

from __future__ import annotations

from typing import Final

from e2e import kem
from e2e.errors import DowngradeError, InvalidKeyError
from e2e.explain import Trace, emit
from e2e.kdf import X3DH_DISCONTINUITY, ChainKey, RootKey, hkdf
from e2e.kem import KemCiphertext, KemKeyPair, KemPublicKey
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.x3dh import InitialMessage, PreKeyBundle, SharedSecret, initiator_dh, responder_dh

__all__ = ["PQXDH_INFO", "kdf_pqxdh", "initiate", "respond"]

PQXDH_INFO: Final = b"e2e-relay_PQXDH_CURVE25519_SHA-256_ML-KEM-1024"
"""The HKDF info of PQXDH §2.2: this application, its curve, hash and KEM."""

_ZERO_SALT: Final = b"\x00" * 32


def kdf_pqxdh(
    dh_outputs: bytes, kem_shared_secret: bytes, kem_pre_key: KemPublicKey
) -> tuple[RootKey, ChainKey]:
    """``HKDF(0×32, 0xFF×32 ‖ DH1..DH4 ‖ SS ‖ EncodeKEM(PQPK_B), PQXDH_INFO, 64)`` → RK, CK.

    ``dh_outputs`` is ``DH1 ‖ DH2 ‖ DH3`` (``‖ DH4`` with a one-time prekey); see the module
    docstring for why Bob's encoded KEM prekey closes the input.
    """
    if len(kem_shared_secret) != kem.SHARED_SECRET_LENGTH:
        raise InvalidKeyError(f"an ML-KEM shared secret is {kem.SHARED_SECRET_LENGTH} bytes")
    ikm = X3DH_DISCONTINUITY + dh_outputs + kem_shared_secret + kem_pre_key.serialize()
    derived = hkdf(_ZERO_SALT, ikm, PQXDH_INFO, 64)
    return RootKey(derived[:32]), ChainKey(derived[32:], 0)


def _derive(
    dh_outputs: list[bytes],
    kem_shared_secret: bytes,
    kem_pre_key: KemPublicKey,
    alice: PublicKey,
    bob: PublicKey,
    trace: Trace | None,
) -> SharedSecret:
    root_key, chain_key = kdf_pqxdh(b"".join(dh_outputs), kem_shared_secret, kem_pre_key)
    emit(
        trace,
        "pqxdh.kdf",
        {
            "inputs": len(dh_outputs) + 1,
            "info": PQXDH_INFO.decode(),
            "kem_pre_key": kem_pre_key.fingerprint(),
        },
        {"root_key": root_key.key, "chain_key": chain_key.key},
    )
    return SharedSecret(root_key, chain_key, alice.serialize() + bob.serialize())


def initiate(
    our_identity_key: KeyPair,
    their_bundle: PreKeyBundle,
    rng: Rng,
    trace: Trace | None = None,
    *,
    kem_rng: Rng | None = None,
) -> tuple[InitialMessage, SharedSecret]:
    """Alice's side (PQXDH §3.3): verify the bundle's two signatures, draw ``EK_A`` from ``rng``,
    encapsulate to Bob's KEM prekey and compute ``SK``.

    ``kem_rng`` pins the encapsulation's 32 random bytes (FIPS 203 ``m``) for known-answer
    vectors and selects the slow reproducible path of :func:`e2e.kem.encapsulate`; leave it
    ``None`` everywhere else, and OpenSSL draws ``m``.
    Returns the header to send (with the KEM ciphertext and prekey id) and the shared secret.
    """
    if their_bundle.kem_pre_key is None or their_bundle.kem_pre_key_id is None:
        raise InvalidKeyError("PQXDH needs a bundle with a signed KEM prekey")
    if not isinstance(their_bundle.kem_pre_key, KemPublicKey):
        raise InvalidKeyError("a Kyber1024 prekey is for Signal's PQXDH (e2e.pqxdh_v4), not this one")
    our_base_key, dh_outputs = initiator_dh(our_identity_key, their_bundle, rng, trace)
    ciphertext, shared_secret = kem.encapsulate(their_bundle.kem_pre_key, kem_rng)
    emit(
        trace,
        "pqxdh.kem",
        {
            "operation": "encapsulate",
            "kem_pre_key_id": their_bundle.kem_pre_key_id,
            "kem_pre_key": their_bundle.kem_pre_key.fingerprint(),
        },
        {"shared_secret": shared_secret},
    )
    secret = _derive(
        dh_outputs,
        shared_secret,
        their_bundle.kem_pre_key,
        our_identity_key.public_key,
        their_bundle.identity_key,
        trace,
    )
    message = InitialMessage.for_bundle(
        their_bundle, our_identity_key.public_key, our_base_key.public_key, ciphertext
    )
    return message, secret


def respond(
    our_identity_key: KeyPair,
    our_signed_pre_key: KeyPair,
    our_one_time_pre_key: KeyPair | None,
    our_kem_pre_key: KemKeyPair | None,
    message: InitialMessage,
    trace: Trace | None = None,
) -> SharedSecret:
    """Bob's side (PQXDH §3.4): the DH values from his private keys, then ``SS`` by decapsulating
    the message's ciphertext with the KEM prekey it names.

    The caller has looked up ``our_signed_pre_key``, ``our_one_time_pre_key`` and
    ``our_kem_pre_key`` by the ids in ``message``; ``None`` means the lookup found nothing.
    """
    if message.kem_ciphertext is None:
        raise DowngradeError("the initial message carries no KEM ciphertext: it was not made with PQXDH")
    if not isinstance(message.kem_ciphertext, KemCiphertext):
        raise InvalidKeyError("a Kyber1024 ciphertext is for Signal's PQXDH (e2e.pqxdh_v4), not this one")
    if our_kem_pre_key is None:
        raise InvalidKeyError(
            f"KEM prekey {message.kem_pre_key_id} is not available"
            " (unknown, or a one-time KEM prekey already used)"
        )
    dh_outputs = responder_dh(our_identity_key, our_signed_pre_key, our_one_time_pre_key, message, trace)
    shared_secret = our_kem_pre_key.decapsulate(message.kem_ciphertext)
    emit(
        trace,
        "pqxdh.kem",
        {
            "operation": "decapsulate",
            "kem_pre_key_id": message.kem_pre_key_id if message.kem_pre_key_id is not None else -1,
            "kem_pre_key": our_kem_pre_key.public_key.fingerprint(),
        },
        {"shared_secret": shared_secret},
    )
    return _derive(
        dh_outputs,
        shared_secret,
        our_kem_pre_key.public_key,
        message.identity_key,
        our_identity_key.public_key,
        trace,
    )
