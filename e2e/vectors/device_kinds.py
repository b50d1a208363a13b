"""The ``device_linking`` vector kind: the linking signatures, the signed device list, the link code.

A case either *links* (the primary's and the companion's private keys, the metadata, the list and
the pinned randomness → every signature, encoding, the link code, the mailbox id and the sealed
linking payload) or *checks* a signed device list (the primary's public key, the account, the
signed list and optionally the version of a list seen before → the list's version and device ids,
or the name of the error that refuses it).  ``docs/vectors.md`` describes the fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from e2e.devices import (
    DeviceList,
    LinkingMetadata,
    accept_device_list,
    sign_account,
    sign_device_list,
    verify_device_list,
)
from e2e.errors import E2EError
from e2e.keys import PrivateKey
from e2e.linking import LinkingPayload, LinkOffer, open_linking_payload, seal_linking_payload
from e2e.vectors import SeededRng
from e2e.vectors.kinds import Inputs, Output, fixed_rng

__all__ = ["LINK_INPUTS", "CHECK_INPUTS", "OUTPUTS", "device_linking", "device_linking_cases"]

LINK_INPUTS = frozenset(
    [
        "primary_identity_private",
        "companion_identity_private",
        "account",
        "device_id",
        "linked_at",
        "list_version",
        "list_timestamp",
        "account_signature_random",
        "device_signature_random",
        "list_signature_random",
        "linking_secret",
        "seal_nonce",
    ]
)
CHECK_INPUTS = frozenset(["primary_identity_public", "account", "signed_device_list", "seen_device_list"])
OUTPUTS = frozenset(
    [
        "primary_identity_public",
        "companion_identity_public",
        "linking_metadata",
        "account_signature",
        "device_signature",
        "device_identity",
        "device_list",
        "signed_device_list",
        "link_code",
        "mailbox",
        "sealed_payload",
        "version",
        "device_ids",
        "error",
    ]
)


def device_linking(raw: Mapping[str, object]) -> Output:
    """Link a companion (every output of a link) or check a signed device list (see the module)."""
    inputs = Inputs(raw)
    if "signed_device_list" in raw:
        primary = inputs.public_key("primary_identity_public")
        account = inputs.optional_text("account") or ""
        signed = inputs.hex("signed_device_list")
        seen = inputs.optional_hex("seen_device_list")
        inputs.done()
        try:
            checked = verify_device_list(signed, primary, account)
            if seen is not None:
                accept_device_list(verify_device_list(seen, primary, account), checked)
        except E2EError as error:
            return {"error": type(error).__name__}
        return {"version": checked.version, "device_ids": list(checked.device_ids)}
    primary_private = inputs.private_key("primary_identity_private")
    companion_private = inputs.private_key("companion_identity_private")
    account = inputs.optional_text("account") or ""
    device_id = inputs.integer("device_id")
    linked_at = inputs.integer("linked_at")
    list_version = inputs.integer("list_version")
    list_timestamp = inputs.integer("list_timestamp")
    account_random = inputs.hex("account_signature_random", 64)
    device_random = inputs.hex("device_signature_random", 64)
    list_random = inputs.hex("list_signature_random", 64)
    secret = inputs.hex("linking_secret", 32)
    nonce = inputs.hex("seal_nonce", 12)
    inputs.done()
    primary_key = primary_private.public_key()
    companion_key = companion_private.public_key()
    metadata = LinkingMetadata(account, device_id, linked_at)
    account_signature = sign_account(primary_private, metadata, companion_key, fixed_rng(account_random))
    device_list = DeviceList.of(
        account, list_version, list_timestamp, [(1, primary_key), (device_id, companion_key)]
    )
    signed_list = sign_device_list(primary_private, device_list, fixed_rng(list_random))
    offer = LinkOffer(companion_key, secret)
    payload = LinkingPayload(metadata, primary_key, account_signature, signed_list)
    sealed = seal_linking_payload(offer, payload, fixed_rng(nonce))
    opened = open_linking_payload(offer, sealed)
    identity = opened.device_identity(companion_private, fixed_rng(device_random))
    identity.verify(primary_key)
    return {
        "primary_identity_public": primary_key.serialize().hex(),
        "companion_identity_public": companion_key.serialize().hex(),
        "linking_metadata": metadata.encode().hex(),
        "account_signature": account_signature.hex(),
        "device_signature": identity.device_signature.hex(),
        "device_identity": identity.encode().hex(),
        "device_list": device_list.encode().hex(),
        "signed_device_list": signed_list.encode().hex(),
        "link_code": offer.to_code(),
        "mailbox": offer.mailbox.hex(),
        "sealed_payload": sealed.hex(),
    }


def device_linking_cases(rng: SeededRng) -> list[tuple[str, dict[str, object]]]:
    """Links of two companions, then checks of their lists: good, rolled back, forged, tampered."""
    cases: list[tuple[str, dict[str, object]]] = []
    primary = PrivateKey.generate(rng)
    for device_id, version in ((2, 2), (3, 3)):
        cases.append(
            (
                f"link-device{device_id}",
                {
                    "primary_identity_private": primary.serialize().hex(),
                    "companion_identity_private": PrivateKey.generate(rng).serialize().hex(),
                    "account": "alice",
                    "device_id": device_id,
                    "linked_at": 1_800_000_000 + device_id,
                    "list_version": version,
                    "list_timestamp": 1_800_000_000 + device_id,
                    "account_signature_random": rng(64).hex(),
                    "device_signature_random": rng(64).hex(),
                    "list_signature_random": rng(64).hex(),
                    "linking_secret": rng(32).hex(),
                    "seal_nonce": rng(12).hex(),
                },
            )
        )
    older = str(device_linking(cases[0][1])["signed_device_list"])
    newer = str(device_linking(cases[1][1])["signed_device_list"])
    primary_public = primary.public_key().serialize().hex()
    other_public = PrivateKey.generate(rng).public_key().serialize().hex()
    flipped = bytearray(bytes.fromhex(newer))
    flipped[10] ^= 0x01
    checks: list[tuple[str, dict[str, object]]] = [
        ("check-good", {"signed_device_list": newer}),
        ("check-newer-after-older", {"signed_device_list": newer, "seen_device_list": older}),
        ("check-rollback", {"signed_device_list": older, "seen_device_list": newer}),
        ("check-other-key", {"signed_device_list": newer, "primary_identity_public": other_public}),
        ("check-other-account", {"signed_device_list": newer, "account": "bob"}),
        ("check-tampered", {"signed_device_list": bytes(flipped).hex()}),
        ("check-truncated", {"signed_device_list": newer[:-2]}),
    ]
    for name, change in checks:
        cases.append((name, {"primary_identity_public": primary_public, "account": "alice", **change}))
    return cases
