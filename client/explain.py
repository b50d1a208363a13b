"""Explain mode's text: turns the core's :class:`e2e.explain.Event` objects into lines a student can read.

What this module owns
---------------------
:func:`render` (one event → one line of text), :class:`Explainer` (a ready-made
:data:`e2e.explain.Trace` callback that renders and writes each event), the table of human titles
for the steps the core emits, and the warning shown when private values are revealed.

Invariants
----------
* Public values (``Event.public``: public-key prefixes, counters, ids, sizes) are shown as they are.
* Secret values (``Event.secret``: DH outputs, root, chain and message keys) are shown only as
  :func:`e2e.explain.fingerprint` digests: enough to see that Alice and Bob derived the same value,
  useless to anyone who reads the screen.  The single exception is ``show_secrets=True``, the
  teaching switch behind ``--show-secrets``; front ends that set it print :data:`SHOW_SECRETS_WARNING`
  first, and this module prefixes every revealed value with ``SECRET`` so it cannot be mistaken.
* Unknown steps still render (name, public values, fingerprints), so a new event in the core shows
  up in every front end without a change here.
* The rendered line is inert (:func:`client.inert.inert`): public values can carry what a peer
  sent (ids, names), and no control character of theirs reaches the terminal.

What it does not know
---------------------
Where the text goes (the caller passes ``write``), which side of the conversation it is on beyond
the label it was given, or anything about the protocol's state: it only formats events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from client.inert import inert
from e2e.explain import Event, fingerprint

__all__ = ["SHOW_SECRETS_WARNING", "STEP_TITLES", "Explainer", "render"]

SHOW_SECRETS_WARNING = (
    "!!! --show-secrets: PRIVATE KEY MATERIAL WILL BE PRINTED IN FULL !!!\n"
    "!!! DH outputs, root, chain and message keys appear below in hex. Anyone who sees this   !!!\n"
    "!!! screen or its log can read these messages. Use it to learn, never with real secrets. !!!"
)
"""The banner a front end prints before it renders anything with ``show_secrets=True``."""

# The spec's formula for each X3DH Diffie-Hellman value (X3DH §3.3).  Both sides compute the same
# values from opposite halves of each key pair, so the formula names the keys, not the side.
_X3DH_FORMULAS = {
    "DH1": "DH(IK_A, SPK_B)",
    "DH2": "DH(EK_A, IK_B)",
    "DH3": "DH(EK_A, SPK_B)",
    "DH4": "DH(EK_A, OPK_B)",
}

STEP_TITLES: Mapping[str, str] = {
    # X3DH (Signal's X3DH specification §3).
    "x3dh.bundle_verified": "X3DH: prekey bundle signature Sig(IK_B, Encode(SPK_B)) verified",
    "x3dh.base_key": "X3DH: fresh ephemeral key EK_A",
    "x3dh.dh": "X3DH:",
    "x3dh.kdf": "X3DH: KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4]) → root key RK, chain key CK",
    # PQXDH (Signal's PQXDH specification §3).
    "pqxdh.kem": "PQXDH: ML-KEM shared secret SS",
    "pqxdh.kdf": "PQXDH: KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS) → root key RK, chain key CK",
    # Signal's PQXDH with Kyber1024 (message version 4) and the Triple Ratchet's SPQR part.
    "ratchet.pq_key": "SPQR: field 5 (pq_ratchet) of the message",
    "ratchet.pq_epoch": "SPQR: new epoch, a fresh ML-KEM-768 secret from the braid",
    # Double Ratchet (Signal's Double Ratchet specification §3).
    "ratchet.init": "Ratchet: initialised from the shared secret (§3.3)",
    "ratchet.dh_step": "Ratchet: DH ratchet step, KDF_RK(RK, DH(DHs, DHr)) → new RK and chain key",
    "ratchet.chain_step": "Ratchet: symmetric step KDF_CK(CK) → next chain key",
    "ratchet.message_key": "Ratchet: message keys (AES-256 key ‖ HMAC-SHA256 key ‖ IV)",
    "ratchet.mac": "MAC check (HMAC-SHA256 truncated to 8 bytes, compared in constant time)",
    "ratchet.skipped_keys_stored": "Ratchet: message keys of skipped messages stored (MKSKIPPED)",
    "ratchet.skipped_key_used": "Ratchet: stored skipped message key used, then deleted",
    # Session records (libsignal's SessionRecord: one current state, some archived ones).
    "session.new_state": "Session: new state from a PreKey message (previous one archived)",
    "session.known_base_key": "Session: PreKey message for a state we already have (same base key)",
    "session.state_promoted": "Session: an archived state decrypted it and becomes current",
}
"""Human titles for the steps the core emits; anything else renders under its own name."""


# Titles that depend on one public field of the event: (step, field, value) → title.  The field
# is then left out of the listed values, since the title already says it.
_VARIANT_TITLES: Mapping[tuple[str, str, str | int | bool], str] = {
    ("ratchet.mac", "ok", True): "MAC check passed (HMAC-SHA256, 8 bytes, compared in constant time)",
    ("ratchet.mac", "ok", False): "MAC check FAILED: message rejected, session state unchanged",
    ("ratchet.dh_step", "direction", "receiving"): (
        "Ratchet: DH step on receiving a new ratchet key DHr: KDF_RK(RK, DH(DHs, DHr)) → RK, CKr"
    ),
    ("ratchet.dh_step", "direction", "sending"): (
        "Ratchet: DH step with our fresh ratchet key DHs: KDF_RK(RK, DH(DHs, DHr)) → RK, CKs"
    ),
    ("ratchet.chain_step", "chain", "sending"): "Ratchet: KDF_CK on the sending chain CKs",
    ("ratchet.chain_step", "chain", "receiving"): "Ratchet: KDF_CK on the receiving chain CKr",
    ("ratchet.message_key", "direction", "encrypt"): "Ratchet: message keys to encrypt (AES-256 ‖ HMAC ‖ IV)",
    ("ratchet.message_key", "direction", "decrypt"): "Ratchet: message keys to decrypt (AES-256 ‖ HMAC ‖ IV)",
    ("ratchet.pq_key", "pq_key_mixed", True): (
        "SPQR: chunk of field 5 (pq_ratchet); SPQR's key mixed in: HKDF(salt = pq_key, seed) → message keys"
    ),
    ("ratchet.pq_key", "pq_key_mixed", False): "SPQR: field 5 (pq_ratchet), no SPQR key for this message yet",
    ("pqxdh.kem", "operation", "encapsulate"): "PQXDH: ML-KEM encapsulation to Bob's KEM prekey → SS",
    ("pqxdh.kem", "operation", "decapsulate"): "PQXDH: ML-KEM decapsulation with our KEM prekey → SS",
}


def _title(step: str, public: dict[str, str | int | bool]) -> str:
    for (variant_step, name, value), title in _VARIANT_TITLES.items():
        if variant_step == step and name in public and public[name] == value:
            del public[name]
            return title
    return STEP_TITLES.get(step, step)


def _format_public(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _format_secret(value: bytes, show_secrets: bool) -> str:
    if show_secrets:
        return f"SECRET {value.hex()}"
    return fingerprint(value)


def render(event: Event, show_secrets: bool = False) -> str:
    """One line describing ``event``: its title, then ``name=value`` for public and secret values.

    Secret values appear as fingerprints (``#1a2b3c4d``) unless ``show_secrets`` is true.
    """
    public = dict(event.public)
    title = _title(event.step, public)
    if event.step == "pqxdh.kem" and public.get("kem") == "Kyber1024":
        # Signal's PQXDH (message version 4) runs the same step with Kyber1024 instead of ML-KEM.
        del public["kem"]
        title = title.replace("ML-KEM", "Kyber1024").replace("KEM prekey", "Kyber prekey")
    if event.step == "x3dh.dh":
        # "X3DH: DH2 = DH(EK_A, IK_B) = #1a2b3c4d" reads better than a list of fields.
        name = str(public.pop("name", "DH?"))
        title = f"X3DH: {name} = {_X3DH_FORMULAS.get(name, name)}"
        output = event.secret.get("output")
        if output is not None and len(event.secret) == 1:
            return inert(f"{title} = {_format_secret(output, show_secrets)}")
    fields = [f"{key}={_format_public(value)}" for key, value in public.items()]
    fields += [f"{key}={_format_secret(value, show_secrets)}" for key, value in event.secret.items()]
    if not fields:
        return inert(title)
    return inert(f"{title}: " + ", ".join(fields))


class Explainer:
    """A trace callback that renders each event and hands the text to ``write``.

    ``label`` ("Alice", "Bob") starts every line when given.  Turn it on and off with ``enabled``
    (the chat client's ``/explain``); a disabled explainer drops events.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        label: str | None = None,
        show_secrets: bool = False,
        enabled: bool = True,
    ) -> None:
        self._write = write
        self.label = label
        self.show_secrets = show_secrets
        self.enabled = enabled

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        text = render(event, show_secrets=self.show_secrets)
        self._write(f"{self.label}: {text}" if self.label else text)

    def __repr__(self) -> str:
        return f"Explainer(label={self.label!r}, show_secrets={self.show_secrets}, enabled={self.enabled})"
