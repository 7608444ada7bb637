"""``call_of``: who calls (bearer credential, DPoP proof) under which request id, read
straight from the ASGI scope, for the Litestar routes and the hot paths alike."""

from __future__ import annotations

from typing import Any

from broker.http.request_id import request_id_of
from broker.service.broker import Call
from broker.service.credentials import basic_credential, bearer_credential


def call_of(scope: Any) -> Call:
    authorization: str | None = None
    proofs: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            if authorization is None:  # the first one, as the framework's headers.get
                authorization = value.decode("latin-1")
        elif name == b"dpop":
            proofs.append(value.decode("latin-1"))
    # Several DPoP headers are one invalid proof (""), never "the first one".
    dpop = None if not proofs else proofs[0] if len(proofs) == 1 else ""
    credential, client_id = bearer_credential(authorization), None
    if credential is None and (basic := basic_credential(authorization)) is not None:
        client_id, credential = basic  # client_secret_basic: introspection and revocation clients
    return Call(request_id_of(scope), credential, dpop, client_id)


def header(scope: Any, wanted: bytes) -> str | None:
    """The first value of header ``wanted`` (a lower-case name), as the framework reads it."""
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None
