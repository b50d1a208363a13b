"""The registry of vector kinds: for each, the function that recomputes it, the first format version
that has it, and the names of the inputs it reads and the outputs it computes.

The checker (:func:`e2e.vectors.check_cases`) looks kinds up here; the JSON Schema
(:mod:`e2e.vectors.schema`) is written from the same lists, so the two cannot drift apart.  Adding
a kind is one entry: its function (``inputs -> outputs``, reading its inputs through
:class:`~e2e.vectors.kinds.Inputs`), the version it arrives in and its field names.  The tests check
that every input a vector file gives and every output a kind computes is listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.vectors import device_kinds, explicit, primitive_kinds
from e2e.vectors.kinds import KINDS, Kind

__all__ = ["KindSpec", "REGISTRY"]


@dataclass(frozen=True)
class KindSpec:
    """One kind: ``compute`` maps a case's inputs to every output it knows."""

    compute: Kind
    since_version: int
    inputs: frozenset[str]
    outputs: frozenset[str]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_X3DH_INPUTS = _names(
    "alice_identity_private alice_base_private bob_identity_private bob_signed_pre_key_private "
    "bob_one_time_pre_key_private pre_key_id signed_pre_key_signature_random registration_id "
    "device_id signed_pre_key_id"
)
_X3DH_OUTPUTS = _names(
    "alice_identity_public alice_base_public bob_identity_public bob_signed_pre_key_public "
    "signed_pre_key_signature bob_one_time_pre_key_public dh1 dh2 dh3 dh4 root_key chain_key "
    "associated_data initial_message bob_root_key bob_chain_key"
)

REGISTRY: dict[str, KindSpec] = {
    "xeddsa": KindSpec(
        KINDS["xeddsa"],
        1,
        _names("private_key message random public_key signature"),
        _names("public_key signature valid"),
    ),
    "x3dh": KindSpec(KINDS["x3dh"], 1, _X3DH_INPUTS, _X3DH_OUTPUTS),
    "pqxdh": KindSpec(
        KINDS["pqxdh"],
        1,
        _X3DH_INPUTS
        | _names("bob_kem_pre_key_seed kem_pre_key_signature_random kem_encapsulation_random kem_pre_key_id"),
        _X3DH_OUTPUTS | _names("bob_kem_pre_key_public kem_pre_key_signature kem_shared_secret"),
    ),
    "pqxdh_v4": KindSpec(
        KINDS["pqxdh_v4"],
        1,
        _X3DH_INPUTS
        | _names(
            "bob_kyber_pre_key_seed kyber_pre_key_signature_random kyber_encapsulation_random "
            "kyber_pre_key_id"
        ),
        _X3DH_OUTPUTS
        | _names(
            "bob_kyber_pre_key_public kyber_pre_key_signature kyber_shared_secret pq_ratchet_key "
            "bob_pq_ratchet_key"
        ),
    ),
    "kdf_root": KindSpec(KINDS["kdf_root"], 1, _names("root_key dh_out"), _names("root_key chain_key")),
    "kdf_chain": KindSpec(KINDS["kdf_chain"], 1, _names("chain_key indices"), _names("steps")),
    "message_keys": KindSpec(
        KINDS["message_keys"],
        1,
        _names("chain_key counter"),
        _names("cipher_key mac_key iv counter next_chain_key"),
    ),
    "fingerprint": KindSpec(
        KINDS["fingerprint"],
        1,
        _names(
            "local_identity_key local_identifier remote_identity_key remote_identifier version iterations"
        ),
        _names("displayable scannable"),
    ),
    "conversation": KindSpec(
        KINDS["conversation"],
        1,
        _names(
            "alice_identity_private bob_identity_private bob_signed_pre_key_private "
            "alice_registration_id bob_registration_id signed_pre_key_id bob_one_time_pre_key_private "
            "pre_key_id signed_pre_key_signature_random alice_rng_seed bob_rng_seed script"
        ),
        _names("steps"),
    ),
    "sender_key": KindSpec(
        KINDS["sender_key"],
        1,
        _names("framing distribution_id chain_id iteration chain_key signing_private_key messages"),
        _names("signing_public_key distribution_message messages"),
    ),
    "kyber1024": KindSpec(
        KINDS["kyber1024"], 1, _names("drbg_seed"), _names("pk_sha256 sk_sha256 ct_sha256 ss")
    ),
    "group_membership": KindSpec(KINDS["group_membership"], 1, _names("group_id steps"), _names("changes")),
    "attachment": KindSpec(
        KINDS["attachment"],
        1,
        _names("key iv plaintext digest size blob"),
        _names("padded_size blob_size blob mac digest plaintext error"),
    ),
    "business_name": KindSpec(
        KINDS["business_name"],
        1,
        _names(
            "directory_private random account identity_public display_name not_before not_after "
            "certificate directory_public now"
        ),
        _names("directory_public certificate display_name not_before not_after error"),
    ),
    "x25519": KindSpec(
        primitive_kinds.x25519,
        2,
        _names("private_key their_public_key iterations"),
        _names("public_key shared_secret error"),
    ),
    "xeddsa_spec": KindSpec(
        primitive_kinds.xeddsa_spec,
        2,
        _names("private_key message random public_key signature"),
        _names("public_key signature valid libsignal_valid"),
    ),
    "ed25519": KindSpec(primitive_kinds.ed25519, 2, _names("public_key message signature"), _names("valid")),
    "hkdf": KindSpec(
        primitive_kinds.hkdf_sha256,
        2,
        _names("ikm salt info length"),
        _names("prk okm error"),
    ),
    "x3dh_responder": KindSpec(
        explicit.x3dh_responder,
        2,
        explicit.RESPONDER_INPUTS,
        explicit.RESPONDER_OUTPUTS,
    ),
    "explicit_conversation": KindSpec(
        explicit.explicit_conversation,
        2,
        explicit.CONVERSATION_INPUTS,
        explicit.CONVERSATION_OUTPUTS,
    ),
    # Linked devices: the linking signatures, the signed device list and the link code.
    "device_linking": KindSpec(
        device_kinds.device_linking,
        2,
        device_kinds.LINK_INPUTS | device_kinds.CHECK_INPUTS,
        device_kinds.OUTPUTS,
    ),
}
