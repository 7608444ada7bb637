"""Wiring: a ``GatewayApp`` from a ``GatewayConfig`` (the adapters it needs), and serving it."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Final

import httpx
import uvicorn

from broker.gateway.app import GatewayApp
from broker.gateway.budgets import Ledger, MemoryLedger, RedisLedger
from broker.gateway.config import GatewayConfig, load_config
from broker.gateway.containment import Containment
from broker.gateway.secrets import SecretStore, VaultKvReader, read_file_secret
from broker.gateway.upstream import UpstreamPool
from broker.gateway.verification import Verifiers

log = logging.getLogger(__name__)

STARTUP_WAIT: Final = 5.0


def broker_client() -> httpx.AsyncClient:
    """For the containment reports: never follows redirects, reads no proxy or credential
    from the environment."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(2.0))


def build_app(config: GatewayConfig) -> GatewayApp:
    service_key = read_file_secret(config.service_key_file) if config.service_key_file else None
    vault = (
        VaultKvReader(config.vault_addr, config.vault_token_file)
        if config.vault_addr is not None and config.vault_token_file is not None
        else None
    )
    secrets_store = SecretStore((r.credential for r in config.routes), vault=vault, refresh=config.secret_refresh)
    verifiers = Verifiers(
        issuer=config.issuer,
        jwks_url=config.jwks_url,
        audiences=config.audiences,
        revocation=config.revocation,
        redis_prefix=config.redis_prefix,
        service_key=service_key,
    )
    ledger: Ledger = (
        RedisLedger(config.redis_url, config.redis_prefix) if config.redis_url is not None else MemoryLedger()
    )
    client = broker_client()
    upstream = UpstreamPool(timeout=config.upstream_timeout, connect_timeout=min(5.0, config.upstream_timeout))
    containment = Containment(config.issuer, service_key, client) if service_key else None
    secrets_store.start()
    secrets_store.wait_first_round(STARTUP_WAIT)
    verifiers.wait_ready(STARTUP_WAIT)
    return GatewayApp(
        config,
        verifiers=verifiers,
        secrets_store=secrets_store,
        ledger=ledger,
        upstream=upstream,
        client=client,
        containment=containment,
    )


def describe(config: GatewayConfig) -> str:
    """The start-up summary (no secret: only where they live)."""
    routes = ", ".join(f"{r.kind}:{r.match}->{r.upstream} ({r.audience})" for r in config.routes)
    return (
        f"capbroker gateway on {config.host}:{config.port}; issuer {config.issuer}; revocation "
        f"{'introspection' if config.revocation == 'introspection' else 'redis feed'}; "
        f"redis_prefix {config.redis_prefix!r}; budgets {'redis' if config.redis_url else 'in memory'}; "
        f"containment {config.containment}; workers {config.workers}; routes: {routes}"
    )


#: where ``create_app`` (in each worker process) finds the settings file
CONFIG_PATH_ENV: Final = "CAPBROKER_GATEWAY_CONFIG_PATH"


def create_app() -> GatewayApp:
    """The app of one worker process (``workers: N``): the settings file named by the parent,
    and the same environment."""
    path = os.environ.get(CONFIG_PATH_ENV) or None
    return build_app(load(path, dict(os.environ)))


def serve(config: GatewayConfig, path: str | None = None) -> int:
    """Serve until stopped. With ``workers: N`` above 1, uvicorn's supervisor runs N
    processes on one socket, each a whole gateway (its own verifier, feed and secrets);
    budgets are shared through ``redis_url`` (without it, each worker counts alone)."""
    print(describe(config), file=sys.stderr, flush=True)
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "http": "httptools",
        "loop": "uvloop",
    }
    if config.workers > 1:
        os.environ[CONFIG_PATH_ENV] = str(Path(path).resolve()) if path is not None else ""
        uvicorn.run("broker.gateway.server:create_app", factory=True, workers=config.workers, **options)
        return 0
    app = build_app(config)
    uvicorn.run(app, **options)
    app.secrets.close()
    app.verifiers.close()
    return 0


def load(path: str | Path | None, env: dict[str, str]) -> GatewayConfig:
    text = Path(path).read_bytes() if path is not None else None
    return load_config(text, str(path or "environment"), env)
