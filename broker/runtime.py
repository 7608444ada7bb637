"""Wiring: settings -> backends -> ``Broker`` -> app. The only module that picks adapters."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from broker.config import Settings
from broker.http.app import create_app
from broker.http.hot_paths import BrokerApp
from broker.policy.loader import load_policy
from broker.service.audit_checkpointer import Checkpointer
from broker.service.audit_recorder import AuditRecorder
from broker.service.broker import Broker
from broker.service.metrics import Metrics
from broker.service.ports import Downstream, IssuerKeys, LongTermSigning, StateStore, VaultTokens
from broker.verify.revocation import RevocationCheck

if TYPE_CHECKING:
    from broker.backends.audit_archiver import AuditArchiver
    from broker.backends.redis_durability import Verdict
    from broker.backends.transit import TransitSigningBackend
    from broker.backends.vault_clients import TokenSource, VaultTls
    from broker.backends.vault_token import VaultToken

log = logging.getLogger("broker")


def vault_verify(settings: Settings) -> VaultTls:
    """How the TLS connection to Vault is made: Vault's certificate checked against
    ``vault_ca_file`` (or the system's CAs); the broker's own certificate if one is set."""
    from broker.backends.vault_clients import VaultTls

    cert = (settings.vault_client_cert, settings.vault_client_key) if settings.vault_client_cert else None
    return VaultTls(ca=settings.vault_ca_file or True, client_cert=cert)


def vault_token(settings: Settings) -> VaultToken:
    """The broker's own Vault token, renewed and followed by ``keep()`` (a background task
    of ``build_app``); one-shot commands use it as it is."""
    from broker.backends.vault_token import VaultToken

    if settings.vault_auth == "approle":
        from broker.backends.vault_login import AppRoleLogin

        login = AppRoleLogin(
            settings.vault_addr,
            settings.vault_role_id,
            Path(settings.vault_secret_id_file),
            mount=settings.vault_auth_mount,
            timeout=settings.backend_timeout,
            verify=vault_verify(settings),
        )
        return VaultToken.logged_in(
            login, addr=settings.vault_addr, timeout=settings.backend_timeout, verify=vault_verify(settings)
        )
    return VaultToken(
        settings.vault_token,
        addr=settings.vault_addr,
        file=Path(settings.vault_token_file) if settings.vault_token_file else None,
        timeout=settings.backend_timeout,
        verify=vault_verify(settings),
    )


def transit_backend(settings: Settings, token: TokenSource | None = None) -> TransitSigningBackend:
    """The settings' Transit key (signing in transit mode; the long-term keys for audit verify)."""
    from broker.backends.transit import TransitSigningBackend

    return TransitSigningBackend(
        addr=settings.vault_addr,
        token=token if token is not None else settings.vault_token,
        mount=settings.transit_mount,
        key=settings.transit_key,
        alg=settings.signing_alg,
        timeout=settings.backend_timeout,
        refresh=settings.key_refresh,
        verify=vault_verify(settings),
    )


def signing_backend(settings: Settings, token: TokenSource | None = None) -> LongTermSigning:
    if settings.signer == "vault" and settings.signing == "session" and settings.state == "redis":
        from broker.backends.endorsed_signer import EndorsedSigningBackend, SignerSettings

        signer = SignerSettings(
            issuer=settings.issuer,
            window=int(settings.session_key_window),
            lead=int(settings.session_key_lead),
            timeout=settings.backend_timeout,
            vault_silence=min(1.0, settings.key_refresh),
        )
        return EndorsedSigningBackend.connect(
            signer,
            vault_addr=settings.vault_addr,
            vault_token=token if token is not None else settings.vault_token,
            redis_url=settings.redis_url,
            prefix=settings.state_prefix,  # the endorsed keys and withdrawals: the state slot
            mount=settings.transit_mount,
            key=settings.transit_key,
            alg=settings.signing_alg,
            key_refresh=settings.key_refresh,
            verify=vault_verify(settings),
        )
    if settings.signer == "vault":
        return transit_backend(settings, token)
    from broker.backends.local_signer import LocalSigningBackend

    return LocalSigningBackend.generate(alg=settings.signing_alg)


def state_store(settings: Settings) -> StateStore:
    if settings.state == "redis":
        from broker.backends.redis_state import RedisState

        return RedisState.from_url(
            settings.redis_url,
            timeout=settings.backend_timeout,
            stream=settings.stream,
            prefix=settings.key_prefix,
            wait_replicas=settings.wait_replicas,
        )
    from broker.backends.memory_state import MemoryState

    return MemoryState()


def vault_tokens(settings: Settings, token: TokenSource | None = None) -> VaultTokens | None:
    """Vault token lookup for ``vault`` identities: wherever Vault is configured."""
    if settings.signer != "vault":
        return None
    from broker.backends.vault_lookup import VaultTokenLookup

    own = token if token is not None else settings.vault_token
    return VaultTokenLookup(settings.vault_addr, own, timeout=settings.backend_timeout, verify=vault_verify(settings))


def downstream(settings: Settings, token: TokenSource | None = None) -> Downstream | None:
    """Downstream credentials (vault-kv, database) from Vault: wherever Vault is configured."""
    if settings.signer != "vault":
        return None
    from broker.backends.vault_downstream import VaultDownstream

    return VaultDownstream(
        settings.vault_addr,
        token if token is not None else settings.vault_token,
        timeout=settings.backend_timeout,
        transit_mount=settings.transit_mount,
        verify=vault_verify(settings),
    )


def issuer_keys(settings: Settings) -> IssuerKeys:
    from broker.backends.oidc_keys import OidcKeys

    return OidcKeys(timeout=settings.backend_timeout)


def revocation_feed(settings: Settings) -> RevocationCheck | None:
    """A local revocation set fed by Redis: introspection and exchange then check
    revocation without a round trip (fails closed while the feed is behind)."""
    if settings.state != "redis":
        return None
    from broker.verify.revocation_feed import RevocationFeed

    return RevocationFeed(settings.redis_url, prefix=settings.key_prefix, timeout=settings.backend_timeout)


def audit_archiver(settings: Settings) -> AuditArchiver | None:
    """The process's audit archiver (one of the replicas' archivers holds the lease at a time)."""
    if settings.state != "redis" or not settings.audit_archive_dir:
        return None
    from broker.backends.audit_archive import ArchiveDir
    from broker.backends.audit_archiver import AuditArchiver

    return AuditArchiver.connect(
        settings.redis_url,
        ArchiveDir(Path(settings.audit_archive_dir)),
        timeout=settings.backend_timeout,
        stream=settings.stream,
        tail_events=settings.audit_tail_events,
        segment_events=settings.audit_segment_events,
    )


def build_broker(settings: Settings, *, audit_out: TextIO | None = None, token: TokenSource | None = None) -> Broker:
    """A broker over the configured backends; the policy must load (fail at start).
    ``token``: the broker's Vault token as the process keeps it (``vault_token``)."""
    policy = load_policy(settings.scopes)
    state = state_store(settings)
    signer = signing_backend(settings, token)
    audit = AuditRecorder(state, out=audit_out if audit_out is not None else sys.stdout)
    metrics = Metrics()
    return Broker(
        issuer=settings.issuer,
        policy_dir=settings.scopes,
        policy=policy,
        signer=signer,
        state=state,
        audit=audit,
        checkpoints=Checkpointer(
            audit,
            signer,
            issuer=settings.issuer,
            every_events=settings.audit_checkpoint_events,
            interval=settings.audit_checkpoint_interval,
            metrics=metrics,
        ),
        metrics=metrics,
        admin_key_hashes=settings.admin_key_sha256,
        clock_skew=math.ceil(settings.clock_skew),
        issuer_keys=issuer_keys(settings),
        vault_tokens=vault_tokens(settings, token),
        revocations=revocation_feed(settings),
        downstream=downstream(settings, token),
        downstream_records=state.downstream_records(),
    )


#: start-up waits this long for the signing self-test before taking requests (see create_app)
READY_WAIT = 10.0
#: `broker serve` waits this long at start for Redis to answer its durability check
REDIS_START_WAIT = 10.0


def redis_durability(settings: Settings, *, wait: float = REDIS_START_WAIT) -> Verdict:
    """May ``broker serve`` start on this Redis, and what must it warn about?
    (``broker.backends.redis_durability``). A Redis that does not answer within ``wait``
    seconds cannot be checked: refused, whatever is asserted."""
    from broker.backends.redis_durability import (
        RedisUnreachable,
        Verdict,
        combined,
        durability_verdict,
        read_redis_configs,
    )
    from broker.verify.redis_keys import on_cluster

    try:
        found = read_redis_configs(settings.redis_url, timeout=settings.backend_timeout, wait=wait)
    except RedisUnreachable as e:
        return Verdict(f"Redis did not answer within {wait:g}s ({e}), so its durability cannot be checked")
    cluster = on_cluster(settings.redis_url)
    return combined([durability_verdict(settings.redis_durability, one, cluster_url=cluster) for one in found])


def build_app(settings: Settings, *, handle_sighup: bool = True) -> BrokerApp:
    archiver = audit_archiver(settings)
    token = vault_token(settings) if settings.signer == "vault" else None
    background = [archiver.run] if archiver is not None else []
    if token is not None:
        background.append(token.keep)  # renewal and the token file, for the app's life
    return create_app(
        build_broker(settings, token=token),
        max_body_bytes=settings.max_body_bytes,
        handle_sighup=handle_sighup,
        ready_wait=READY_WAIT,
        freeze_heap=True,
        background=background,
    )
