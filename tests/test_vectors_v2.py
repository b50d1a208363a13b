"""Format version 2: the JSON Schema, the kinds that take every key as given, the checker that reports
every mismatch (as text and as JSON), and independent checks of the published files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import axolotl_curve25519
import jsonschema
import pytest
from axolotl.ecc.curve import Curve
from axolotl.identitykey import IdentityKey
from axolotl.identitykeypair import IdentityKeyPair
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
from axolotl.sessioncipher import SessionCipher
from axolotl.state.prekeyrecord import PreKeyRecord
from axolotl.state.signedprekeyrecord import SignedPreKeyRecord
from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from interop.axolotl_peer import axolotl_key_pair
from vector_files import FILES, VECTORS, load_vectors, run_cli, write_document

from e2e.vectors import VectorFormatError, check_cases, check_document
from e2e.vectors.generate import render
from e2e.vectors.registry import REGISTRY
from e2e.vectors.schema import schema
from e2e.wire import PreKeySignalMessage

REPOSITORY = Path(__file__).parent.parent
SCHEMA_FILE = REPOSITORY / "docs" / "vectors.schema.json"


# -- the schema ----------------------------------------------------------------------------------


def test_the_published_schema_is_what_the_registry_gives() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render(schema())
    jsonschema.Draft202012Validator.check_schema(schema())


def test_the_schema_command_prints_it(capsys) -> None:
    code, out, _ = run_cli(capsys, "schema")
    assert code == 0 and json.loads(out) == schema()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_vector_file_validates_against_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator(schema()).validate(load_vectors(path.name))


def _schema_refusals() -> list[tuple[str, object]]:
    v1 = load_vectors("kdf_root.json")
    v2 = load_vectors("rfc5869_hkdf.json")

    def changed(base: dict, change) -> object:
        document = copy.deepcopy(base)
        change(document)
        return document

    return [
        ("version-3", changed(v1, lambda d: d.update(version=3))),
        ("v1-case-source", changed(v1, lambda d: d["cases"][0].update(source="RFC"))),
        ("v1-with-v2-kind", changed(v1, lambda d: d.update(kind="hkdf"))),
        ("unknown-input", changed(v1, lambda d: d["cases"][0]["inputs"].update(salt="00"))),
        ("unknown-output", changed(v1, lambda d: d["cases"][0]["expected"].update(mac_key="00"))),
        ("v2-flags-not-a-list", changed(v2, lambda d: d["cases"][0].update(flags="x"))),
        ("v2-flag-with-space", changed(v2, lambda d: d["cases"][0].update(flags=["two words"]))),
        ("v2-repeated-flag", changed(v2, lambda d: d["cases"][0].update(flags=["a", "a"]))),
        ("v2-blank-source", changed(v2, lambda d: d["cases"][0].update(source=" "))),
        ("v2-comment-not-text", changed(v2, lambda d: d["cases"][0].update(comment=5))),
        ("v2-unknown-case-field", changed(v2, lambda d: d["cases"][0].update(note="x"))),
        ("v2-top-level-comment", changed(v2, lambda d: d.update(comment="x"))),
    ]


@pytest.mark.parametrize(
    "document", [r[1] for r in _schema_refusals()], ids=[r[0] for r in _schema_refusals()]
)
def test_schema_and_checker_refuse_the_same_malformed_files(document: object, tmp_path, capsys) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema()).validate(document)
    with pytest.raises(VectorFormatError):
        check_cases(document)
    code, out, err = run_cli(capsys, "check", str(write_document(tmp_path, document, "bad.json")))
    assert (code, out) == (2, "") and "not a valid vector file" in err


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_registry_lists_every_field_a_kind_reads_or_computes(path: Path) -> None:
    document = load_vectors(path.name)
    spec = REGISTRY[document["kind"]]
    assert spec.since_version <= document["version"]
    for case in document["cases"]:
        assert set(case["inputs"]) <= spec.inputs
        assert set(spec.compute(case["inputs"])) <= spec.outputs, case["name"]


# -- reporting every mismatch --------------------------------------------------------------------


def _corrupted(tmp_path: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Three files with several corrupted cases between them, and the (case, field) pairs spoiled."""
    spoiled: list[tuple[str, str]] = []
    js = load_vectors("libsignal_javascript_conversation.json")
    for case in js["cases"][:2]:
        step = case["expected"]["steps"][4]
        step["body"] = step["body"][:-2] + ("00" if step["body"][-2:] != "00" else "01")
        spoiled.append((case["name"], "steps[4].body"))
    rfc = load_vectors("rfc7748_x25519.json")
    rfc["cases"][0]["expected"]["shared_secret"] = "00" * 32
    spoiled.append((rfc["cases"][0]["name"], "shared_secret"))
    rfc["cases"][4]["expected"]["public_key"] = "11" * 32
    spoiled.append((rfc["cases"][4]["name"], "public_key"))
    responder = load_vectors("published_x3dh_responder.json")
    # A tampered message is refused: that is a mismatch of plaintext and error, not a format error.
    case = responder["cases"][3]
    body = case["inputs"]["prekey_message"]
    # Byte 200 lies inside the AES ciphertext: the message still parses, its MAC no longer verifies.
    case["inputs"]["prekey_message"] = body[:400] + ("0" if body[400] != "0" else "1") + body[401:]
    spoiled += [(case["name"], "plaintext"), (case["name"], "error")]
    paths = [
        write_document(tmp_path, js, "js.json"),
        write_document(tmp_path, rfc, "rfc.json"),
        write_document(tmp_path, responder, "responder.json"),
    ]
    return paths, spoiled


def test_several_corrupted_cases_are_all_reported(tmp_path, capsys) -> None:
    paths, spoiled = _corrupted(tmp_path)
    code, out, err = run_cli(capsys, "check", str(VECTORS / "rfc5869_hkdf.json"), *map(str, paths))
    assert code == 1 and out == ""
    for case, field in spoiled:
        assert f"MISMATCH in case {case!r}: {field} differs" in err, (case, field)
    assert err.count("MISMATCH in case") == len(spoiled)
    assert err.splitlines()[-1].startswith(
        f"FAILED: {len(spoiled)} mismatches in 5 cases of 3 files, 0 invalid"
    )


def test_json_report(tmp_path, capsys) -> None:
    paths, spoiled = _corrupted(tmp_path)
    invalid = tmp_path / "invalid.json"
    invalid.write_text("{", encoding="utf-8")
    good = VECTORS / "rfc5869_hkdf.json"
    code, out, err = run_cli(capsys, "check", "--json", str(good), *map(str, paths), str(invalid))
    assert code == 2 and err == ""
    report = json.loads(out)
    assert report["format"] == "e2e-vectors-report" and report["version"] == 1
    assert report["ok"] is False and report["exit_status"] == 2
    assert report["mismatches"] == len(spoiled) and report["failed_cases"] == 5
    assert report["invalid_files"] == 1
    statuses = [(entry["path"], entry["status"]) for entry in report["files"]]
    assert statuses == [(str(good), "ok")] + [(str(p), "mismatch") for p in paths] + [
        (str(invalid), "invalid")
    ]
    reported = {(m["case"], m["field"]) for entry in report["files"] for m in entry.get("mismatches", [])}
    assert reported == set(spoiled)
    assert report["files"][-1]["error"].startswith("not valid JSON")
    assert report["files"][0]["cases"] == len(load_vectors("rfc5869_hkdf.json")["cases"])


def test_json_report_when_everything_matches() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "e2e.vectors", "check", "--json", *map(str, FILES)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == ""
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["mismatches"] == 0
    assert report["cases"] == sum(len(load_vectors(path.name)["cases"]) for path in FILES)
    assert {entry["status"] for entry in report["files"]} == {"ok"}


def test_check_document_carries_every_mismatch() -> None:
    from e2e.vectors import VectorMismatchError

    document = load_vectors("rfc7748_x25519.json")
    for case in document["cases"]:
        case["expected"]["shared_secret"] = "00" * 32
    with pytest.raises(VectorMismatchError) as caught:
        check_document(document)
    assert [m.case for m in caught.value.mismatches] == [case["name"] for case in document["cases"]]
    assert caught.value.case == document["cases"][0]["name"] and caught.value.field == "shared_secret"


# -- the explicit kinds refuse what does not fit ---------------------------------------------------


def _js_case() -> dict:
    document = load_vectors("libsignal_javascript_conversation.json")
    document["cases"] = document["cases"][:1]
    return document


def _explicit_refusals() -> list[tuple[str, object]]:
    def changed(change) -> object:
        document = _js_case()
        change(document["cases"][0]["inputs"])
        return document

    return [
        (
            "too-few-alice-keys",
            changed(lambda i: i.update(alice_ratchet_privates=i["alice_ratchet_privates"][:1])),
        ),
        ("no-bob-keys", changed(lambda i: i.update(bob_ratchet_privates=[]))),
        ("short-ratchet-key", changed(lambda i: i["bob_ratchet_privates"].__setitem__(0, "00" * 31))),
        ("no-signature-for-a-bundle", changed(lambda i: i.pop("signed_pre_key_signature"))),
        ("unknown-start", changed(lambda i: i.update(start="handshake"))),
        ("signature-with-ratchet-start", changed(lambda i: i.update(start="ratchet"))),
        ("prekey-id-alone", changed(lambda i: i.pop("bob_one_time_pre_key_private"))),
        ("deliver-unknown", changed(lambda i: i["script"].insert(0, {"deliver": "Z"}))),
        ("step-not-an-object", changed(lambda i: i["script"].append(["deliver", "Z"]))),
        ("unknown-step", changed(lambda i: i["script"].append({"forward": "Z"}))),
        (
            "unknown-sender",
            changed(lambda i: i["script"].append({"send": "carol", "id": "Q", "plaintext": "00"})),
        ),
        (
            "sender-a-list",
            changed(lambda i: i["script"].append({"send": ["bob"], "id": "Q", "plaintext": "00"})),
        ),
        (
            "duplicate-message-id",
            changed(lambda i: i["script"].extend([{"send": "bob", "id": "Q", "plaintext": "00"}] * 2)),
        ),
        (
            "plaintext-not-hex",
            changed(lambda i: i["script"].append({"send": "bob", "id": "Q", "plaintext": "zz"})),
        ),
    ]


@pytest.mark.parametrize(
    "document", [r[1] for r in _explicit_refusals()], ids=[r[0] for r in _explicit_refusals()]
)
def test_explicit_conversation_format_errors(document: object) -> None:
    with pytest.raises(VectorFormatError):
        check_cases(document)


def test_a_bad_signature_is_a_mismatch_not_a_format_error() -> None:
    document = _js_case()
    inputs = document["cases"][0]["inputs"]
    signature = inputs["signed_pre_key_signature"]
    inputs["signed_pre_key_signature"] = ("00" if signature[:2] != "00" else "01") + signature[2:]
    _, mismatches = check_cases(document)
    assert [(m.field, m.actual.split(":")[0]) for m in mismatches] == [
        ("computation", "InvalidSignatureError")
    ]


def test_responder_needs_alices_keys_or_her_message() -> None:
    document = load_vectors("published_x3dh_responder.json")
    document["cases"] = document["cases"][:1]
    document["cases"][0]["inputs"].pop("alice_base_public")
    with pytest.raises(VectorFormatError):
        check_cases(document)


# -- independent checks of the published and generated version-2 files ----------------------------


def test_javascript_plaintexts_are_padded_push_message_contents() -> None:
    # test/SessionCipherTest.js: PushMessageContent {body = text}, then 0x80 and zeros to 159 bytes.
    for case in load_vectors("libsignal_javascript_conversation.json")["cases"]:
        for step in case["inputs"]["script"]:
            if "send" in step:
                plaintext = bytes.fromhex(step["plaintext"])
                assert len(plaintext) == 159
                assert plaintext[:4] == b"\x0a\x01" + step["id"].encode() + b"\x80"
                assert plaintext[4:] == bytes(155)


def test_javascript_prekey_messages_decrypt_with_python_axolotl() -> None:
    # python-axolotl holding Bob's published keys reads Alice's two PreKeySignalMessages.
    case = load_vectors("libsignal_javascript_conversation.json")["cases"][0]
    inputs = case["inputs"]
    store = InMemoryAxolotlStore()
    identity = axolotl_key_pair(bytes.fromhex(inputs["bob_identity_private"]))
    store.identityKeyStore.identityKeyPair = IdentityKeyPair(
        IdentityKey(identity.getPublicKey()), identity.getPrivateKey()
    )
    store.identityKeyStore.localRegistrationId = inputs["bob_registration_id"]
    signed = axolotl_key_pair(bytes.fromhex(inputs["bob_signed_pre_key_private"]))
    signature = bytes.fromhex(inputs["signed_pre_key_signature"])
    assert Curve.verifySignature(identity.getPublicKey(), signed.getPublicKey().serialize(), signature)
    store.storeSignedPreKey(
        inputs["signed_pre_key_id"], SignedPreKeyRecord(inputs["signed_pre_key_id"], 0, signed, signature)
    )
    one_time = axolotl_key_pair(bytes.fromhex(inputs["bob_one_time_pre_key_private"]))
    store.storePreKey(inputs["pre_key_id"], PreKeyRecord(inputs["pre_key_id"], one_time))
    cipher = SessionCipher(store, store, store, store, "alice", 1)
    sends = {step["id"]: step for step in inputs["script"] if "send" in step}
    outputs = dict(zip([s.get("id") for s in inputs["script"]], case["expected"]["steps"], strict=True))
    for message_id in ("A", "B"):
        body = bytes.fromhex(outputs[message_id]["body"])
        plaintext = cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=body))
        assert bytes(plaintext).hex() == sends[message_id]["plaintext"]


def test_xeddsa_spec_verdicts_agree_with_libsignal_c() -> None:
    for case in load_vectors("xeddsa_spec.json")["cases"]:
        inputs, expected = case["inputs"], case["expected"]
        message = bytes.fromhex(inputs["message"])
        if "private_key" in inputs:
            public, signature = (
                bytes.fromhex(expected["public_key"])[1:],
                bytes.fromhex(expected["signature"]),
            )
            assert signature[63] & 0xE0 == 0, case["name"]
        else:
            public, signature = bytes.fromhex(inputs["public_key"])[1:], bytes.fromhex(inputs["signature"])
        verdict = axolotl_curve25519.verifySignature(public, message, signature) == 0
        assert verdict == expected["libsignal_valid"], case["name"]


def test_x25519_and_hkdf_files_agree_with_openssl() -> None:
    # OpenSSL (through cryptography) computes the same values, and refuses the same inputs.
    for name in ("rfc7748_x25519.json", "x25519.json"):
        for case in load_vectors(name)["cases"]:
            inputs, expected = case["inputs"], case["expected"]
            if inputs.get("iterations", 1) != 1:
                continue
            private = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["private_key"]))
            public = X25519PublicKey.from_public_bytes(bytes.fromhex(inputs["their_public_key"]))
            if expected.get("error") is not None:
                with pytest.raises(ValueError):
                    private.exchange(public)
            else:
                assert private.exchange(public).hex() == expected["shared_secret"], case["name"]
    for name in ("rfc5869_hkdf.json", "hkdf.json"):
        for case in load_vectors(name)["cases"]:
            inputs, expected = case["inputs"], case["expected"]
            salt = bytes.fromhex(inputs["salt"]) or None
            if expected.get("error") is not None:
                with pytest.raises(ValueError):
                    HKDF(hashes.SHA256(), inputs["length"], salt, bytes.fromhex(inputs["info"]))
                continue
            okm = HKDF(hashes.SHA256(), inputs["length"], salt, bytes.fromhex(inputs["info"])).derive(
                bytes.fromhex(inputs["ikm"])
            )
            assert okm.hex() == expected["okm"], case["name"]


def test_rfc8032_signatures_verify_with_openssl() -> None:
    for case in load_vectors("rfc8032_ed25519.json")["cases"]:
        inputs = case["inputs"]
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(inputs["public_key"]))
        public.verify(bytes.fromhex(inputs["signature"]), bytes.fromhex(inputs["message"]))
        assert case["expected"] == {"valid": True}


def test_generated_responder_cases_agree_with_python_axolotl_and_openssl() -> None:
    # X3DH messages: python-axolotl, holding Bob's keys, decrypts them to the same plaintext.
    # PQXDH: OpenSSL's ML-KEM-1024 decapsulates the same shared secret from the same seed.
    checked = {"x3dh": 0, "pqxdh": 0}
    for case in load_vectors("x3dh_responder.json")["cases"]:
        inputs, expected = case["inputs"], case["expected"]
        if expected.get("error") is not None:
            continue
        if expected["agreement"] == "pqxdh":
            ciphertext = bytes.fromhex(inputs.get("kem_ciphertext", ""))
            if "prekey_message" in inputs:
                ciphertext = PreKeySignalMessage.deserialize(
                    bytes.fromhex(inputs["prekey_message"])
                ).kem_ciphertext
                ciphertext = ciphertext.serialize()
            key = MLKEM1024PrivateKey.from_seed_bytes(bytes.fromhex(inputs["bob_kem_pre_key_seed"]))
            assert key.decapsulate(ciphertext[1:]).hex() == expected["kem_shared_secret"], case["name"]
            checked["pqxdh"] += 1
        elif "prekey_message" in inputs:
            message = PreKeySignalMessage.deserialize(bytes.fromhex(inputs["prekey_message"]))
            store = InMemoryAxolotlStore()
            identity = axolotl_key_pair(bytes.fromhex(inputs["bob_identity_private"]))
            store.identityKeyStore.identityKeyPair = IdentityKeyPair(
                IdentityKey(identity.getPublicKey()), identity.getPrivateKey()
            )
            store.identityKeyStore.localRegistrationId = inputs["bob_registration_id"]
            signed = axolotl_key_pair(bytes.fromhex(inputs["bob_signed_pre_key_private"]))
            store.storeSignedPreKey(
                message.signed_pre_key_id, SignedPreKeyRecord(message.signed_pre_key_id, 0, signed, bytes(64))
            )
            one_time = axolotl_key_pair(bytes.fromhex(inputs["bob_one_time_pre_key_private"]))
            store.storePreKey(message.pre_key_id, PreKeyRecord(message.pre_key_id, one_time))
            cipher = SessionCipher(store, store, store, store, "alice", 1)
            plaintext = cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=message.serialized))
            assert bytes(plaintext).hex() == expected["plaintext"], case["name"]
            checked["x3dh"] += 1
    assert checked == {"x3dh": 1, "pqxdh": 4}
