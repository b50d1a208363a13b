"""The relay's business-name ops by hand: typed refusals for every malformed or misbound post,
nothing kept from a refused one, the relay serving everyone else; ``e2e-relay --directory-key``."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import AsyncIterator

import pytest

from e2e.business_name import BusinessName, issue_certificate
from e2e.keys import KeyPair
from server import Relay, SQLiteStore
from server.business_names import MAX_CERTIFICATE_BYTES
from tests.relay.conftest import TEST_LIMITS, Device
from tests.relay.test_bad_input import Raw, refusal, still_serving
from tests.relay.test_operator_errors import E2E_RELAY, one_error_line, run_relay

DIRECTORY = KeyPair.generate(os.urandom)


@pytest.fixture
async def sqlite_relay(tmp_path) -> AsyncIterator[Relay]:
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), TEST_LIMITS)
    await relay.start("127.0.0.1", 0)
    yield relay
    await relay.close()


def _certificate(account: str, key: KeyPair, directory: KeyPair = DIRECTORY) -> str:
    name = BusinessName(account, key.public_key, "Parcel Depot", 0, 2**63)
    return base64.b64encode(issue_certificate(directory, name, os.urandom)).decode()


async def _authenticated(relay: Relay, device: Device) -> Raw:
    await (await device.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    await raw.auth(device)
    return raw


async def test_the_ops_need_an_authenticated_connection(sqlite_relay) -> None:
    raw = await Raw.open(sqlite_relay.url)
    refusal(await raw.request(op="get_business_certificate", account="parcels"), "unauthenticated")
    key = KeyPair.generate(os.urandom)
    refusal(
        await raw.request(op="put_business_certificate", certificate=_certificate("parcels", key)),
        "unauthenticated",
    )
    await raw.ws.close()


async def test_malformed_and_misbound_posts_are_refused_and_nothing_is_kept(sqlite_relay, rng) -> None:
    device = Device("parcels", 1, rng)
    raw = await _authenticated(sqlite_relay, device)
    other = KeyPair.generate(os.urandom)
    cases = [
        ({}, "bad_request"),
        ({"certificate": 7}, "bad_request"),
        ({"certificate": "not base64!"}, "bad_request"),
        ({"certificate": base64.b64encode(b"\x01garbage").decode()}, "bad_request"),
        ({"certificate": base64.b64encode(bytes(MAX_CERTIFICATE_BYTES + 1)).decode()}, "too_large"),
        ({"certificate": _certificate("parcels", other)}, "identity_mismatch"),
        ({"certificate": _certificate("someone", device.identity)}, "identity_mismatch"),
    ]
    for fields, code in cases:
        refusal(await raw.request(op="put_business_certificate", **fields), code)
    assert sqlite_relay.business_names.get("parcels") is None
    refusal(await raw.request(op="get_business_certificate", account="parcels"), "not_found")
    refusal(await raw.request(op="get_business_certificate", account="Not An Account"), "bad_request")
    refusal(await raw.request(op="get_business_certificate"), "bad_request")

    # A good one is kept, served, and replaced by the next.
    first = _certificate("parcels", device.identity)
    assert (await raw.request(op="put_business_certificate", certificate=first))["ok"] is True
    second = _certificate("parcels", device.identity)
    assert (await raw.request(op="put_business_certificate", certificate=second))["ok"] is True
    served = await raw.request(op="get_business_certificate", account="parcels")
    assert served["certificate"] == second
    await raw.ws.close()
    await still_serving(sqlite_relay, rng)


async def test_a_relay_given_the_directory_key_refuses_what_it_did_not_sign(sqlite_relay, rng) -> None:
    sqlite_relay.business_names.directory_key = DIRECTORY.public_key
    device = Device("parcels", 1, rng)
    raw = await _authenticated(sqlite_relay, device)
    forged = _certificate("parcels", device.identity, KeyPair.generate(os.urandom))
    refusal(await raw.request(op="put_business_certificate", certificate=forged), "invalid_signature")
    assert sqlite_relay.business_names.get("parcels") is None
    genuine = _certificate("parcels", device.identity)
    assert (await raw.request(op="put_business_certificate", certificate=genuine))["ok"] is True
    await raw.ws.close()


def test_e2e_relay_directory_key_mistakes_are_one_line(tmp_path) -> None:
    status, lines = run_relay("--port", "0", "--db", str(tmp_path / "r.sqlite3"), "--directory-key", "05abc")
    assert status == 2
    assert "--directory-key" in one_error_line(lines)
    (tmp_path / "bad.pub").write_text("not hex\n")
    status, lines = run_relay(
        "--port", "0", "--db", str(tmp_path / "r.sqlite3"), "--directory-key", str(tmp_path / "bad.pub")
    )
    assert status == 2 and "66 hex digits" in one_error_line(lines)


async def test_e2e_relay_with_a_directory_key_file_refuses_a_forged_post(tmp_path, rng) -> None:
    import asyncio
    import re

    from client.transport import RelayError

    public = tmp_path / "dir.pub"
    public.write_text(DIRECTORY.public_key.serialize().hex() + "\n")
    process = await asyncio.create_subprocess_exec(
        str(E2E_RELAY),
        *("--port", "0", "--db", str(tmp_path / "r.sqlite3"), "--directory-key", str(public)),
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "the relay exited before listening"
            found = re.search(r"listening url=(ws://\S+)", line)
            url = found.group(1) if found else None
        device = Device("parcels", 1, rng)
        connection = await device.register(url)
        forged = _certificate("parcels", device.identity, KeyPair.generate(os.urandom))
        with pytest.raises(RelayError) as refused:
            await connection.request("put_business_certificate", certificate=forged)
        assert refused.value.code == "invalid_signature"
        await connection.request(
            "put_business_certificate", certificate=_certificate("parcels", device.identity)
        )
        await connection.close()
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
