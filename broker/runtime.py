"""Wiring: settings -> backends -> ``Broker`` -> app. The only module that picks adapters."""

from __future__ import annotations

import logging
import math
import sys
from typing import TextIO

from litestar import Litestar

from broker.audit.recorder import AuditRecorder
from broker.config import Settings
from broker.http.app import create_app
from broker.policy.loader import load_policy
from broker.service.broker import Broker
from broker.service.ports import SigningBackend, StateStore

log = logging.getLogger("broker")


def signing_backend(settings: Settings) -> SigningBackend:
    if settings.signer == "vault":
        from broker.backends.transit import TransitSigningBackend

        return TransitSigningBackend(
            addr=settings.vault_addr,
            token=settings.vault_token,
            mount=settings.transit_mount,
            key=settings.transit_key,
            alg=settings.signing_alg,
            timeout=settings.backend_timeout,
            refresh=settings.key_refresh,
        )
    from broker.backends.local_signer import LocalSigningBackend

    return LocalSigningBackend.generate(alg=settings.signing_alg)


def state_store(settings: Settings) -> StateStore:
    if settings.state == "redis":
        from broker.backends.redis_state import RedisState

        return RedisState.from_url(settings.redis_url, timeout=settings.backend_timeout, stream=settings.audit_stream)
    from broker.backends.memory_state import MemoryState

    return MemoryState()


def build_broker(settings: Settings, *, audit_out: TextIO | None = None) -> Broker:
    """A broker over the configured backends; the policy must load (fail at start)."""
    policy = load_policy(settings.scopes)
    state = state_store(settings)
    return Broker(
        issuer=settings.issuer,
        policy_dir=settings.scopes,
        policy=policy,
        signer=signing_backend(settings),
        state=state,
        audit=AuditRecorder(state, out=audit_out if audit_out is not None else sys.stdout),
        admin_key_hashes=settings.admin_key_sha256,
        clock_skew=math.ceil(settings.clock_skew),
    )


def build_app(settings: Settings, *, handle_sighup: bool = True) -> Litestar:
    return create_app(build_broker(settings), max_body_bytes=settings.max_body_bytes, handle_sighup=handle_sighup)
