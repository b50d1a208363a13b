"""Invalid text in any string field: refused with ``bad_request`` at the boundary, connection kept.

JSON lets a frame carry a lone surrogate (``"\\ud800"``) or a NUL (``"\\u0000"``) inside a string,
although no UTF-8 text, no WebSocket frame the relay could send back and no PostgreSQL ``text``
column can hold them.  Before the check, a surrogate in a request id made the *answer*
unencodable, which aborted the connection and lost the answers after it, and one in a
``client_id`` ended in ``internal_error`` with a traceback.  Every frame here goes over a raw
socket, written byte for byte as a hostile client would.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest

from tests.relay.conftest import Device
from tests.relay.rawsocket import RawSocket
from tests.relay.test_bad_input import queue_of, refusal, still_serving

BODY = base64.b64encode(b"ciphertext").decode()


def send(client_id: str = "c1", **extra) -> dict:
    return {
        "op": "send",
        "to": {"account": "bob", "device_id": 1},
        "client_id": client_id,
        "type": 1,
        "body": BODY,
        **extra,
    }


async def authenticated(relay, rng) -> tuple[RawSocket, Device]:
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    await (await alice.register(relay.url)).close()
    await (await bob.register(relay.url)).close()
    raw = await RawSocket.open(relay.url)
    await raw.auth(alice)
    assert (await raw.response())["ok"] is True
    return raw, bob


async def test_a_lone_surrogate_in_the_request_id_is_refused_and_the_connection_stays(relay, caplog):
    caplog.set_level(logging.INFO)
    raw = await RawSocket.open(relay.url)
    # json.dumps writes the lone surrogate as the escape \ud800, exactly what a hostile client sends.
    await raw.send_frames(
        [
            json.dumps({"v": 1, "id": "\ud800", "op": "ping"}),
            json.dumps({"v": 1, "id": "after", "op": "ping"}),
        ]
    )
    error = refusal(await raw.response(), "bad_request")
    assert "id" in error["message"]
    answer = await raw.response()
    assert answer == {"v": 1, "id": "after", "ok": True}
    assert "Traceback" not in caplog.text
    raw.close()


@pytest.mark.parametrize(
    "fields",
    [
        send(client_id="\ud800"),
        send(client_id="ok\udfff"),
        send(client_id="nul\u0000"),
        send(client_id="\x1b[2J"),
        send(client_id="c1\u009b"),
        send(unknown_field="\ud83d"),
        send(nested={"deep": ["\ud800"]}),
        {**send(), "to": {"account": "bob", "device_id": 1, "\ud800": 1}},
        {"op": "get_signed_pre_key", "account": "bob", "device_id": 1, "key_id": 1, "kind": "ec\ud800"},
        {"op": "get_signed_pre_key", "account": "bob", "device_id": 1, "key_id": 1, "kind": "ec\u0000"},
        {"op": "get_bundle", "account": "bob\ud800"},
        {"op": "ping\ud800"},
    ],
    ids=lambda fields: json.dumps(fields)[:60],
)
async def test_invalid_text_in_any_string_field_is_a_bad_request(relay, rng, caplog, fields):
    caplog.set_level(logging.INFO)
    raw, bob = await authenticated(relay, rng)
    await raw.send_json(id="bad", **fields)
    error = refusal(await raw.response(), "bad_request")
    assert error is not None
    # The refusal carries the (valid) request id, and the connection goes on.
    await raw.send_json(id="good", **send(client_id="fine"))
    answer = await raw.response()
    assert answer["id"] == "good" and answer["ok"] is True, answer
    assert [m.client_id for m in await queue_of(relay, bob)] == ["fine"]
    assert "internal error" not in caplog.text
    assert "Traceback" not in caplog.text
    raw.close()
    await still_serving(relay, rng)


async def test_escaped_text_that_is_valid_is_accepted(relay, rng):
    # A \u escape is not in itself suspicious: a valid astral character written as a surrogate
    # pair, or an accented letter, is ordinary text.
    raw, bob = await authenticated(relay, rng)
    await raw.send_frames([json.dumps({"v": 1, "id": "pair", **send(client_id="smile \U0001f600 é")})])
    answer = await raw.response()
    assert answer["ok"] is True, answer
    assert [m.client_id for m in await queue_of(relay, bob)] == ["smile \U0001f600 é"]
    raw.close()
