"""The relay's board of business-name certificates: a business posts its own, anyone fetches one.

Theory
------
A business-name certificate (:mod:`e2e.business_name`) is signed by a directory key the relay does
not hold, so the relay cannot make one; it only keeps the latest certificate each account posted
and hands it to whoever asks.  Two ops (docs/relay-protocol.md):

* ``put_business_certificate {certificate}``: an authenticated device posts a certificate *for its
  own account and its own identity key*; one for another account or key is refused
  (``identity_mismatch``), a malformed one is ``bad_request``, and when the relay was given the
  directory's public key (``e2e-relay --directory-key``), one that key did not sign is
  ``invalid_signature``.  A later post replaces the earlier one.
* ``get_business_certificate {account}``: the account's certificate, or ``not_found``.

The relay checking the signature only keeps junk off the board; clients verify every certificate
themselves against their own configured directory key, the contact's identity key from their
session, and their own clock, and trust nothing the relay says about a name.

The board is in memory, bounded by the number of accounts (one certificate of at most
:data:`MAX_CERTIFICATE_BYTES` each): a business posts its certificate every time it connects
(:class:`client.bot.Bot` does), so a restarted relay has it back as soon as the business does.  It
is per node: in a cluster, a business posts to the node it is connected to, and customers on other
nodes find it once the business has connected there (docs/business.md lists this).

What it does not know
---------------------
Who the directory is, what a name means, and whether a client shows it.
"""

from __future__ import annotations

import base64

from e2e.business_name import CertificateError, decode_certificate, verify_certificate
from e2e.errors import DecodeError
from e2e.keys import PublicKey
from server import protocol as p
from server.protocol import ErrorCode, ProtocolError, Request
from server.relay import _Connection, _op, log_event

__all__ = ["MAX_CERTIFICATE_BYTES", "BusinessNameBoard"]

MAX_CERTIFICATE_BYTES = 512
"""More than any version-1 certificate can be (about 440 bytes at most)."""


class BusinessNameBoard:
    """The latest certificate posted by each account; ``directory_key`` optionally screens posts."""

    def __init__(self, directory_key: PublicKey | None = None) -> None:
        self.directory_key = directory_key
        self._certificates: dict[str, bytes] = {}

    def __repr__(self) -> str:
        screened = self.directory_key is not None
        return f"BusinessNameBoard(certificates={len(self._certificates)}, screened={screened})"

    def post(self, account: str, identity_key: PublicKey, certificate: bytes, now_ms: int) -> None:
        """Keep ``certificate`` for ``account`` if it names that account and key (and, when a
        directory key is set, verifies under it now); raises :class:`ProtocolError` otherwise."""
        try:
            name, _signature = decode_certificate(certificate)
        except DecodeError as error:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"not a business-name certificate: {error}") from None
        if name.account != account or name.identity_key != identity_key:
            raise ProtocolError(
                ErrorCode.IDENTITY_MISMATCH, "a device posts only its own account's certificate for its key"
            )
        if self.directory_key is not None:
            try:
                verify_certificate(
                    certificate, self.directory_key, account=account, identity_key=identity_key, now_ms=now_ms
                )
            except CertificateError as error:
                raise ProtocolError(
                    ErrorCode.INVALID_SIGNATURE, f"the certificate does not verify: {type(error).__name__}"
                ) from None
        self._certificates[account] = certificate

    def get(self, account: str) -> bytes | None:
        return self._certificates.get(account)


@_op("put_business_certificate")
async def _put_business_certificate(conn: _Connection, request: Request) -> None:
    assert conn.device is not None and conn.identity_key is not None
    certificate = p.field_bytes(request.fields, "certificate", max_length=MAX_CERTIFICATE_BYTES)
    board = conn.relay.business_names
    board.post(conn.device.account, conn.identity_key, certificate, int(conn.relay.clock() * 1000))
    log_event("business_certificate", conn=conn.number, device=conn.device, size=len(certificate))
    conn.send(p.ok(request.id))


@_op("get_business_certificate")
async def _get_business_certificate(conn: _Connection, request: Request) -> None:
    account = p.account_name(request.fields)
    certificate = conn.relay.business_names.get(account)
    if certificate is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "this account has posted no business-name certificate")
    conn.send(p.ok(request.id, certificate=base64.b64encode(certificate).decode("ascii")))
