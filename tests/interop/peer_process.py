"""A driver for ``python -m e2e.peer`` run as a subprocess: requests over its standard input, replies
from its standard output, one JSON object a line.

:class:`PeerProcess` is what a test suite in another language would write in a few lines; here it
also speaks the interface of :class:`tests.interop.axolotl_peer.AxolotlParty` (``bundle``,
``start_session``, ``encrypt``, ``decrypt``, ``has_pre_key``), so the conversations of
:mod:`tests.interop.conversation` run against the peer program exactly as against the libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from e2e.keys import PublicKey
from e2e.peer import bundle_from_json, bundle_to_json
from e2e.x3dh import PreKeyBundle

__all__ = ["PeerError", "PeerProcess"]

REPOSITORY = Path(__file__).resolve().parent.parent.parent
REMOTE = {"name": "remote", "device_id": 1}


class PeerError(Exception):
    """A reply with ``ok: false``: ``type`` is the error type the peer named."""

    def __init__(self, error: dict) -> None:
        super().__init__(f"{error['type']}: {error['message']}")
        self.type = error["type"]


class PeerProcess:
    """One ``python -m e2e.peer`` process holding one device."""

    def __init__(self, registration_id: int = 5151, seed: bytes | None = None) -> None:
        command = [sys.executable, "-m", "e2e.peer"]
        if seed is not None:
            command += ["--seed", seed.hex()]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPOSITORY,
            text=True,
            encoding="utf-8",
        )
        self._next_id = 0
        self.hello = self.request("hello")
        self.identity = PublicKey.deserialize(
            bytes.fromhex(self.request("create", registration_id=registration_id)["identity_key"])
        )
        self.pre_key_id = 31

    # -- the raw exchange --------------------------------------------------------------------------

    def send_line(self, line: str) -> dict:
        """Write one raw line and read one reply (for tests that feed bad input)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        assert reply, (
            f"the peer closed its output: {self.process.stderr.read() if self.process.stderr else ''}"
        )
        return json.loads(reply)

    def request(self, op: str, **arguments: object) -> dict:
        """Send one request; return the reply's results or raise :class:`PeerError`."""
        self._next_id += 1
        reply = self.send_line(json.dumps({"op": op, "id": self._next_id, **arguments}))
        assert reply["id"] == self._next_id
        if not reply["ok"]:
            raise PeerError(reply["error"])
        return reply

    def close(self) -> int:
        """Ask the peer to stop and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.request("shutdown")
        try:
            return self.process.wait(timeout=30)
        finally:
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    # -- the conversation interface ------------------------------------------------------------------

    @property
    def identity_key(self) -> PublicKey:
        return self.identity

    def bundle(self) -> PreKeyBundle:
        self.request("generate_signed_pre_key", key_id=7)
        self.request("generate_pre_keys", start=self.pre_key_id, count=1)
        reply = self.request("bundle", device_id=1, signed_pre_key_id=7, pre_key_id=self.pre_key_id)
        return bundle_from_json(reply["bundle"])

    def start_session(self, their_bundle: PreKeyBundle) -> None:
        self.request("process_bundle", address=REMOTE, bundle=bundle_to_json(their_bundle))

    def has_pre_key(self) -> bool:
        try:
            self.request("bundle", device_id=1, signed_pre_key_id=7, pre_key_id=self.pre_key_id)
        except PeerError as error:
            assert error.type == "UnknownPreKeyError"
            return False
        return True

    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]:
        reply = self.request("encrypt", address=REMOTE, plaintext=plaintext.hex())
        return reply["type"], bytes.fromhex(reply["body"])

    def decrypt(self, message_type: int, body: bytes) -> bytes:
        reply = self.request("decrypt", address=REMOTE, type=message_type, body=body.hex())
        return bytes.fromhex(reply["plaintext"])
