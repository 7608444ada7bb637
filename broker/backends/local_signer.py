"""An in-process signing key for the embedded default (``broker dev``). NOT for production.

The private keys live in this process's memory and die with it: every restart makes a new
key, other replicas cannot share it, and nothing protects it from a memory dump. Production
signs with a Vault/OpenBao Transit key (``broker.backends.transit``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Final

from broker.errors import BackendUnavailable
from broker.token.algorithms import Algorithm, verify_signature
from broker.token.claims import Claims
from broker.token.codec import TYP, assemble
from broker.token.endorsement import statement_input
from broker.token.keys import KeySet, LocalSigner
from broker.token.mint import mint

#: a key name; its versions are ``<name>-v1``, ``<name>-v2``, ... (always inside the kid grammar)
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
_PROBE: Final = b"capbroker local signer self-test"


class LocalSigningBackend:
    """NOT FOR PRODUCTION: signing keys held in this process, for the embedded default only.

    ``broker dev`` uses it so the broker runs with no servers. The keys are lost on restart
    and cannot be shared between replicas or kept out of a memory dump; production uses
    ``TransitSigningBackend``, whose private key never leaves Vault.

    The versions of one named key, oldest first; the newest signs, every version verifies.
    ``rotate`` adds a version and keeps the old ones in ``keyset()``.
    """

    __slots__ = ("_name", "_signers")

    def __init__(self, name: str, signers: Sequence[LocalSigner]) -> None:
        _check_name(name)
        if not signers:
            raise ValueError("a signing backend needs at least one key")
        if len({s.alg for s in signers}) != 1:
            raise ValueError("every version of a key has the same algorithm")
        if [s.kid for s in signers] != [_kid(name, v) for v in range(1, len(signers) + 1)]:
            raise ValueError(f"key versions must be {name}-v1, {name}-v2, ... in order")
        self._name = name
        self._signers = list(signers)

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", *, name: str | None = None) -> LocalSigningBackend:
        """A fresh key ``local-<8 hex>`` (or ``name``), version 1."""
        name = _check_name(name or f"local-{secrets.token_hex(4)}")
        return cls(name, [LocalSigner.generate(alg, _kid(name, 1))])

    @property
    def alg(self) -> Algorithm:
        return self._signers[-1].alg

    @property
    def kid(self) -> str:
        """The kid of the version that signs now."""
        return self._signers[-1].kid

    async def sign(self, claims: Claims) -> str:
        return mint(claims, self._signers[-1])

    async def keyset(self, *, kid: str | None = None, fresh: bool = False) -> KeySet:
        return KeySet(s.public for s in self._signers)

    async def sign_statement(self, typ: str, payload: bytes) -> str:
        """A statement (an audit checkpoint) signed by the newest version, as
        ``TransitSigningBackend.sign_statement``; never a token."""
        if typ == TYP:
            raise ValueError("tokens are signed by sign(), from claims")
        signer = self._signers[-1]
        message = statement_input(signer.alg, typ, signer.kid, payload)
        return assemble(message, signer.sign(message))

    async def rotate(self) -> str:
        signer = LocalSigner.generate(self.alg, _kid(self._name, len(self._signers) + 1))
        self._signers.append(signer)
        return signer.kid

    async def check(self) -> None:
        signer = self._signers[-1]
        if not verify_signature(signer.public.key, _PROBE, signer.sign(_PROBE)):
            raise BackendUnavailable("local: the self-test signature did not verify")

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LocalSigningBackend(kid={self.kid!r}, alg={self.alg!r}, versions={len(self._signers)})"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError("key name outside [A-Za-z0-9][A-Za-z0-9_-]{0,47}")
    return name


def _kid(name: str, version: int) -> str:
    return f"{name}-v{version}"
