"""A JSON-lines peer: this project as a reference implementation another one can drive.

What this package owns
----------------------
:class:`Peer`, one local device over the store API (an
:class:`~e2e.memory_store.InMemoryProtocolStore`, :class:`~e2e.session_cipher.SessionBuilder`,
:class:`~e2e.session_cipher.SessionCipher`), answering requests that are JSON objects, one per
line.  ``python -m e2e.peer`` (:mod:`e2e.peer.__main__`) connects it to standard input and output,
so a test suite in any language can start it as a subprocess and use it as the other side of a
conversation.  ``docs/interop.md`` is the guide; this docstring is the contract.

Requests and replies (protocol version 1)
-----------------------------------------
A request is ``{"op": NAME, "id": ANY, ...arguments}``; ``id`` is optional and echoed.  Byte
strings are lowercase hexadecimal; public keys are libsignal's encodings (``05 ‖ u``, 33 bytes;
``0a ‖ ek`` for KEM keys); an address is ``{"name": TEXT, "device_id": INT}``.  A reply is
``{"id": ID, "ok": true, ...results}`` or ``{"id": ID, "ok": false, "error": {"type": NAME,
"message": TEXT}}``.  The operations (:data:`OPERATIONS`):

``hello``                      → ``protocol``, ``version``, ``implementation``, ``operations``
``create``                     ``registration_id``, optional ``identity_private`` → ``identity_key``
``generate_signed_pre_key``    ``key_id`` → ``key_id``, ``public_key``, ``signature``
``generate_pre_keys``          ``start``, ``count`` (≤ 100) → ``pre_keys``: ``[{"key_id", "public_key"}]``
``generate_kem_pre_key``       ``key_id``, optional ``last_resort`` → ``key_id``, ``public_key``,
                               ``signature``
``bundle``                     ``device_id``, ``signed_pre_key_id``, optional ``pre_key_id``,
                               ``kem_pre_key_id`` → ``bundle`` (the object ``process_bundle`` takes)
``process_bundle``             ``address``, ``bundle`` → (nothing)
``encrypt``                    ``address``, ``plaintext`` → ``type`` (2 or 3), ``body``
``decrypt``                    ``address``, ``type``, ``body`` → ``plaintext``
``session``                    ``address`` → ``has_session``, ``remote_registration_id``,
                               ``their_identity_key``
``trust``                      ``address``, ``identity_key``: accept a (new) identity key →
                               ``replaced`` (whether another key was trusted before)
``shutdown``                   → (nothing); the command-line peer then exits

Invariants
----------
* A request that is not valid (not JSON, not an object, an unknown operation, a missing, extra or
  malformed argument, a line over :data:`MAX_LINE` bytes) is answered with error type
  ``PeerRequestError``; a refusal by the core with the core's exception name
  (``InvalidMessageError``, ``DuplicateMessageError``, ``UntrustedIdentityError``, …).  Either way
  nothing changes: the store API commits only on success, and the peer keeps answering.
* Like the rest of ``e2e``, :class:`Peer` does no I/O: it maps a line to a line.  Randomness comes
  from the ``rng`` it is given and time (the prekeys' timestamps) from ``clock``; the command line
  passes the operating system's generator (or a seeded one) and the system clock.

What it does not do: keep anything beyond the process (the store is in memory), talk to a relay, or
pad plaintexts (the bytes given are the bytes encrypted, as libsignal's ``SessionCipher`` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Final

from e2e.address import ProtocolAddress
from e2e.errors import E2EError
from e2e.kem import KemKeyPair, KemPublicKey
from e2e.keys import KeyPair, PrivateKey, PublicKey, Rng
from e2e.memory_store import InMemoryProtocolStore
from e2e.records import KemPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from e2e.session_cipher import SessionBuilder, SessionCipher, make_pre_key_bundle
from e2e.x3dh import PreKeyBundle

__all__ = [
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "MAX_LINE",
    "OPERATIONS",
    "PeerRequestError",
    "Peer",
    "bundle_from_json",
    "bundle_to_json",
    "error_reply",
]

PROTOCOL: Final = "e2e-peer"
PROTOCOL_VERSION: Final = 1
MAX_LINE: Final = 1 << 20
"""The longest request line read, in bytes (a 64 KiB plaintext is 128 KiB of hex)."""
_MAX_PRE_KEYS: Final = 100
_UINT32_MAX: Final = 0xFFFF_FFFF
_DEVICE_ID_MAX: Final = 0x7FFF_FFFF


class PeerRequestError(E2EError):
    """A request the peer cannot act on: not JSON, not an object, an unknown operation, a bad argument."""


Result = dict[str, object]


class _Arguments:
    """Typed access to a request's arguments; :meth:`done` refuses arguments nobody read."""

    def __init__(self, request: Mapping[str, object]) -> None:
        self._raw = {key: value for key, value in request.items() if key not in ("op", "id")}
        self._read: set[str] = set()

    def _get(self, name: str, optional: bool = False) -> object:
        self._read.add(name)
        if name not in self._raw:
            if optional:
                return None
            raise PeerRequestError(f"missing argument {name!r}")
        return self._raw[name]

    def integer(self, name: str, maximum: int = _UINT32_MAX, optional: bool = False) -> int | None:
        value = self._get(name, optional)
        if value is None and optional:
            return None
        if type(value) is not int or not 0 <= value <= maximum:
            raise PeerRequestError(f"{name!r} is an integer from 0 to {maximum}")
        return value

    def required_integer(self, name: str, maximum: int = _UINT32_MAX) -> int:
        value = self.integer(name, maximum)
        assert value is not None
        return value

    def hex(self, name: str, length: int | None = None, optional: bool = False) -> bytes | None:
        value = self._get(name, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str) or value != value.lower():
            raise PeerRequestError(f"{name!r} is a lowercase hexadecimal string")
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise PeerRequestError(f"{name!r} is not hexadecimal") from None
        if length is not None and len(data) != length:
            raise PeerRequestError(f"{name!r} is {length} bytes, not {len(data)}")
        return data

    def required_hex(self, name: str, length: int | None = None) -> bytes:
        value = self.hex(name, length)
        assert value is not None
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name, optional=True)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise PeerRequestError(f"{name!r} is true or false")
        return value

    def address(self) -> ProtocolAddress:
        value = self._get("address")
        if not isinstance(value, Mapping) or set(value) != {"name", "device_id"}:
            raise PeerRequestError("'address' is an object with exactly name and device_id")
        name, device_id = value["name"], value["device_id"]
        if not isinstance(name, str) or not name or len(name) > 256:
            raise PeerRequestError("an address name is a non-empty string of at most 256 characters")
        if type(device_id) is not int or not 1 <= device_id <= _DEVICE_ID_MAX:
            raise PeerRequestError(f"a device id is an integer from 1 to {_DEVICE_ID_MAX}")
        return ProtocolAddress(name, device_id)

    def mapping(self, name: str) -> Mapping[str, object]:
        value = self._get(name)
        if not isinstance(value, Mapping):
            raise PeerRequestError(f"{name!r} is an object")
        return value

    def done(self) -> None:
        unread = set(self._raw) - self._read
        if unread:
            raise PeerRequestError(f"unknown arguments {sorted(unread)}")


def error_reply(request_id: object, error: E2EError) -> str:
    """The reply line for a refused request: the error's type name and message."""
    reply = {"id": request_id, "ok": False, "error": {"type": type(error).__name__, "message": str(error)}}
    return json.dumps(reply, separators=(",", ":"))


def _public_key(value: bytes) -> PublicKey:
    return PublicKey.deserialize(value)


def bundle_to_json(bundle: PreKeyBundle) -> Result:
    """A bundle as the ``bundle`` operation returns it and ``process_bundle`` takes it."""
    result: Result = {
        "registration_id": bundle.registration_id,
        "device_id": bundle.device_id,
        "identity_key": bundle.identity_key.serialize().hex(),
        "signed_pre_key_id": bundle.signed_pre_key_id,
        "signed_pre_key": bundle.signed_pre_key.serialize().hex(),
        "signed_pre_key_signature": bundle.signed_pre_key_signature.hex(),
    }
    if bundle.pre_key_id is not None and bundle.pre_key is not None:
        result.update(pre_key_id=bundle.pre_key_id, pre_key=bundle.pre_key.serialize().hex())
    if bundle.kem_pre_key is not None and bundle.kem_pre_key_signature is not None:
        result.update(
            kem_pre_key_id=bundle.kem_pre_key_id,
            kem_pre_key=bundle.kem_pre_key.serialize().hex(),
            kem_pre_key_signature=bundle.kem_pre_key_signature.hex(),
        )
    return result


def bundle_from_json(value: Mapping[str, object]) -> PreKeyBundle:
    """Parse the ``bundle`` argument.  A malformed one raises :class:`PeerRequestError`, or the core's
    :class:`~e2e.errors.DecodeError` for a key that does not decode and
    :class:`~e2e.errors.InvalidKeyError` for a prekey without its id (or the reverse)."""
    fields = _Arguments(value)
    bundle = PreKeyBundle(
        registration_id=fields.required_integer("registration_id"),
        device_id=fields.required_integer("device_id", _DEVICE_ID_MAX),
        identity_key=_public_key(fields.required_hex("identity_key", 33)),
        signed_pre_key_id=fields.required_integer("signed_pre_key_id"),
        signed_pre_key=_public_key(fields.required_hex("signed_pre_key", 33)),
        signed_pre_key_signature=fields.required_hex("signed_pre_key_signature", 64),
        pre_key_id=fields.integer("pre_key_id", optional=True),
        pre_key=None if (raw := fields.hex("pre_key", 33, optional=True)) is None else _public_key(raw),
        kem_pre_key_id=fields.integer("kem_pre_key_id", optional=True),
        kem_pre_key=None
        if (kem := fields.hex("kem_pre_key", optional=True)) is None
        else KemPublicKey.deserialize(kem),
        kem_pre_key_signature=fields.hex("kem_pre_key_signature", 64, optional=True),
    )
    fields.done()
    return bundle


class Peer:
    """One local device answering JSON requests (module docstring); ``rng`` and ``clock`` are given.

    ``clock`` returns the time in milliseconds since the epoch, used only for the prekeys'
    creation timestamps.
    """

    def __init__(self, rng: Rng, clock: Callable[[], int], implementation: str = "e2e-relay") -> None:
        self._rng = rng
        self._clock = clock
        self.implementation = implementation
        self.store: InMemoryProtocolStore | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"Peer(implementation={self.implementation!r}, created={self.store is not None})"

    # -- lines ------------------------------------------------------------------------------------

    def handle_line(self, line: bytes | str) -> str:
        """One request line in, one reply line out (without the newline)."""
        request_id: object = None
        try:
            if isinstance(line, bytes):
                if len(line) > MAX_LINE:
                    raise PeerRequestError(f"a request line is at most {MAX_LINE} bytes")
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise PeerRequestError("a request line is UTF-8") from None
            try:
                request = json.loads(line)
            except json.JSONDecodeError as error:
                raise PeerRequestError(f"not JSON: {error.msg}") from None
            if not isinstance(request, dict):
                raise PeerRequestError("a request is a JSON object")
            request_id = request.get("id")
            result = self.handle(request)
        except E2EError as error:
            return error_reply(request_id, error)
        return json.dumps({"id": request_id, "ok": True, **result}, separators=(",", ":"))

    def handle(self, request: Mapping[str, object]) -> Result:
        """Act on one parsed request; raises :class:`PeerRequestError` or the core's errors."""
        op = request.get("op")
        if not isinstance(op, str) or op not in OPERATIONS:
            raise PeerRequestError(f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        arguments = _Arguments(request)
        try:
            return OPERATIONS[op](self, arguments)
        except (ValueError, TypeError) as error:
            # Range checks the core makes with the built-in types (a registration id, a length).
            raise PeerRequestError(str(error)) from None

    # -- operations -------------------------------------------------------------------------------

    def _store(self) -> InMemoryProtocolStore:
        if self.store is None:
            raise PeerRequestError("no device yet: send 'create' first")
        return self.store

    def _hello(self, arguments: _Arguments) -> Result:
        arguments.done()
        return {
            "protocol": PROTOCOL,
            "version": PROTOCOL_VERSION,
            "implementation": self.implementation,
            "operations": list(OPERATIONS),
        }

    def _create(self, arguments: _Arguments) -> Result:
        registration_id = arguments.required_integer("registration_id")
        identity_private = arguments.hex("identity_private", 32, optional=True)
        arguments.done()
        if self.store is not None:
            raise PeerRequestError("this peer already has a device")
        identity = KeyPair(PrivateKey(identity_private)) if identity_private else KeyPair.generate(self._rng)
        self.store = InMemoryProtocolStore(identity, registration_id)
        return {"identity_key": identity.public_key.serialize().hex(), "registration_id": registration_id}

    def _generate_signed_pre_key(self, arguments: _Arguments) -> Result:
        key_id = arguments.required_integer("key_id")
        arguments.done()
        store = self._store()
        key_pair = KeyPair.generate(self._rng)
        signature = store.get_identity_key_pair().sign(key_pair.public_key.serialize(), self._rng)
        store.store_signed_pre_key(SignedPreKeyRecord(key_id, key_pair, signature, self._clock()))
        return {
            "key_id": key_id,
            "public_key": key_pair.public_key.serialize().hex(),
            "signature": signature.hex(),
        }

    def _generate_pre_keys(self, arguments: _Arguments) -> Result:
        start = arguments.required_integer("start")
        count = arguments.required_integer("count", _MAX_PRE_KEYS)
        arguments.done()
        if start + count - 1 > _UINT32_MAX:
            raise PeerRequestError("prekey ids stop at 2**32 - 1")
        store = self._store()
        made = []
        for key_id in range(start, start + count):
            key_pair = KeyPair.generate(self._rng)
            store.store_pre_key(PreKeyRecord(key_id, key_pair))
            made.append({"key_id": key_id, "public_key": key_pair.public_key.serialize().hex()})
        return {"pre_keys": made}

    def _generate_kem_pre_key(self, arguments: _Arguments) -> Result:
        key_id = arguments.required_integer("key_id")
        last_resort = arguments.boolean("last_resort")
        arguments.done()
        store = self._store()
        key_pair = KemKeyPair.generate(self._rng)
        signature = store.get_identity_key_pair().sign(key_pair.public_key.serialize(), self._rng)
        store.store_kem_pre_key(KemPreKeyRecord(key_id, key_pair, signature, self._clock(), last_resort))
        return {
            "key_id": key_id,
            "public_key": key_pair.public_key.serialize().hex(),
            "signature": signature.hex(),
        }

    def _bundle(self, arguments: _Arguments) -> Result:
        device_id = arguments.required_integer("device_id", _DEVICE_ID_MAX)
        signed_pre_key_id = arguments.required_integer("signed_pre_key_id")
        pre_key_id = arguments.integer("pre_key_id", optional=True)
        kem_pre_key_id = arguments.integer("kem_pre_key_id", optional=True)
        arguments.done()
        bundle = make_pre_key_bundle(
            self._store(),
            device_id,
            signed_pre_key_id=signed_pre_key_id,
            pre_key_id=pre_key_id,
            kem_pre_key_id=kem_pre_key_id,
        )
        return {"bundle": bundle_to_json(bundle)}

    def _process_bundle(self, arguments: _Arguments) -> Result:
        address = arguments.address()
        bundle = bundle_from_json(arguments.mapping("bundle"))
        arguments.done()
        SessionBuilder(self._store(), address).process_pre_key_bundle(bundle, self._rng)
        return {}

    def _encrypt(self, arguments: _Arguments) -> Result:
        address = arguments.address()
        plaintext = arguments.required_hex("plaintext")
        arguments.done()
        ciphertext = SessionCipher(self._store(), address).encrypt(plaintext, self._rng)
        return {"type": int(ciphertext.type), "body": ciphertext.body.hex()}

    def _decrypt(self, arguments: _Arguments) -> Result:
        address = arguments.address()
        message_type = arguments.required_integer("type", 255)
        body = arguments.required_hex("body")
        arguments.done()
        plaintext = SessionCipher(self._store(), address).decrypt(body, message_type)
        return {"plaintext": plaintext.hex()}

    def _session(self, arguments: _Arguments) -> Result:
        address = arguments.address()
        arguments.done()
        record = self._store().load_session(address)
        has_session = record is not None and record.has_current_state()
        their_key = None if record is None else record.their_identity_key
        return {
            "has_session": has_session,
            "remote_registration_id": None if record is None else record.remote_registration_id,
            "their_identity_key": None if their_key is None else their_key.serialize().hex(),
        }

    def _trust(self, arguments: _Arguments) -> Result:
        address = arguments.address()
        identity_key = _public_key(arguments.required_hex("identity_key", 33))
        arguments.done()
        replaced = self._store().save_identity(address, identity_key)
        return {"replaced": replaced}

    def _shutdown(self, arguments: _Arguments) -> Result:
        arguments.done()
        self.closed = True
        return {}


OPERATIONS: Final[dict[str, Callable[[Peer, _Arguments], Result]]] = {
    "hello": Peer._hello,
    "create": Peer._create,
    "generate_signed_pre_key": Peer._generate_signed_pre_key,
    "generate_pre_keys": Peer._generate_pre_keys,
    "generate_kem_pre_key": Peer._generate_kem_pre_key,
    "bundle": Peer._bundle,
    "process_bundle": Peer._process_bundle,
    "encrypt": Peer._encrypt,
    "decrypt": Peer._decrypt,
    "session": Peer._session,
    "trust": Peer._trust,
    "shutdown": Peer._shutdown,
}
