"""Vector kinds for single primitives (format version 2): raw X25519, XEdDSA in the specification's
convention, Ed25519 verification and HKDF-SHA256.

These let published primitive vectors (RFC 7748, RFC 5869, other XEdDSA implementations) be
written as they are and checked against the project's own code: :meth:`PrivateKey.agree
<e2e.keys.PrivateKey.agree>`, :meth:`PrivateKey.sign_as_specified
<e2e.keys.PrivateKey.sign_as_specified>` / :meth:`PublicKey.verify_as_specified
<e2e.keys.PublicKey.verify_as_specified>` and :func:`e2e.kdf.hkdf`.  Where the primitive refuses
an input, the output ``error`` names the exception (and the value it would have given is null), so
a vector can state that a refusal is expected.  ``docs/vectors.md`` lists the fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from e2e.errors import InvalidKeyError, InvalidSignatureError
from e2e.kdf import hkdf
from e2e.keys import KEY_LENGTH, PrivateKey, PublicKey, verify_ed25519
from e2e.primitives import hmac_sha256
from e2e.vectors import VectorFormatError
from e2e.vectors.kinds import Inputs, Output, fixed_rng

__all__ = ["x25519", "xeddsa_spec", "hkdf_sha256", "ed25519", "MAX_X25519_ITERATIONS"]

MAX_X25519_ITERATIONS = 10_000
_HKDF_MAX = 255 * 32


def x25519(raw: Mapping[str, object]) -> Output:
    """``X25519(private_key, their_public_key)`` (RFC 7748 §5), both as 32 raw bytes.

    With ``iterations`` = *n* it runs RFC 7748 §5.2's loop: *n* times ``k, u = X25519(k, u), k``,
    and ``shared_secret`` is the final ``k``.  ``public_key`` is ``X25519(private_key, 9)``.
    An all-zero result is refused (``error``: ``InvalidKeyError``), as :meth:`PrivateKey.agree
    <e2e.keys.PrivateKey.agree>` refuses it.
    """
    inputs = Inputs(raw)
    scalar = inputs.hex("private_key", KEY_LENGTH)
    u = inputs.hex("their_public_key", KEY_LENGTH)
    iterations = inputs.optional_integer("iterations")
    inputs.done()
    if iterations is None:
        iterations = 1
    if not 1 <= iterations <= MAX_X25519_ITERATIONS:
        raise VectorFormatError(f"iterations is between 1 and {MAX_X25519_ITERATIONS}")
    output: Output = {"public_key": PrivateKey(scalar).public_key().raw.hex()}
    k = scalar
    try:
        for _ in range(iterations):
            k, u = PrivateKey(k).agree(PublicKey(u)), k
    except InvalidKeyError as error:
        output.update(shared_secret=None, error=type(error).__name__)
    else:
        output.update(shared_secret=k.hex(), error=None)
    return output


def _verdicts(public_key: PublicKey, message: bytes, signature: bytes) -> Output:
    verdicts: Output = {}
    for name, verify in (("valid", public_key.verify_as_specified), ("libsignal_valid", public_key.verify)):
        try:
            verify(message, signature)
        except InvalidSignatureError:
            verdicts[name] = False
        else:
            verdicts[name] = True
    return verdicts


def xeddsa_spec(raw: Mapping[str, object]) -> Output:
    """XEdDSA exactly as Signal's specification writes it (§2.3, §3.3, §3.4), not libsignal's form.

    A signing case (``private_key``, ``message``, ``random`` = the 64 bytes *Z*) gives
    ``public_key`` (33), ``signature`` and the two verdicts; a verification case (``public_key``,
    ``message``, ``signature``) gives the verdicts: ``valid`` (the specification's
    ``xeddsa_verify``) and ``libsignal_valid`` (what a libsignal verifier, which reads a sign bit
    from the signature, says).
    """
    inputs = Inputs(raw)
    message = inputs.hex("message")
    if "public_key" in raw:
        public_key = inputs.public_key("public_key")
        signature = inputs.hex("signature")
        inputs.done()
        return _verdicts(public_key, message, signature)
    private_key = inputs.private_key("private_key")
    random = inputs.hex("random", 64)
    inputs.done()
    signature = private_key.sign_as_specified(message, fixed_rng(random))
    return {
        "public_key": private_key.public_key().serialize().hex(),
        "signature": signature.hex(),
        **_verdicts(private_key.public_key(), message, signature),
    }


def hkdf_sha256(raw: Mapping[str, object]) -> Output:
    """HKDF-SHA256 (RFC 5869): ``prk`` = HKDF-Extract(salt, ikm), ``okm`` = HKDF(salt, ikm, info, length).

    An empty ``salt`` is 32 zero bytes (§2.2).  A ``length`` above 8160 bytes (255 × 32, §2.3) is
    refused by :func:`e2e.kdf.hkdf` (``error``: ``ValueError``).
    """
    inputs = Inputs(raw)
    ikm = inputs.hex("ikm")
    salt = inputs.hex("salt")
    info = inputs.hex("info")
    length = inputs.integer("length")
    inputs.done()
    if length > 4 * _HKDF_MAX:
        raise VectorFormatError(f"length is at most {4 * _HKDF_MAX}")
    output: Output = {"prk": hmac_sha256(salt or bytes(32), ikm).hex()}
    try:
        okm = hkdf(salt, ikm, info, length)
    except ValueError as error:
        output.update(okm=None, error=type(error).__name__)
    else:
        output.update(okm=okm.hex(), error=None)
    return output


def ed25519(raw: Mapping[str, object]) -> Output:
    """Ed25519 verification (RFC 8032 §5.1.7) through :func:`e2e.keys.verify_ed25519`, the last step
    of every XEdDSA verification: ``public_key`` (the 32-byte Edwards point), ``message`` and
    ``signature`` (any length: a wrong one is refused) give ``valid``."""
    inputs = Inputs(raw)
    public_key = inputs.hex("public_key", KEY_LENGTH)
    message = inputs.hex("message")
    signature = inputs.hex("signature")
    inputs.done()
    try:
        verify_ed25519(public_key, message, signature)
    except InvalidSignatureError:
        return {"valid": False}
    return {"valid": True}
