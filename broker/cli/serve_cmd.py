"""``broker serve`` (production: Vault + Redis) and ``broker dev`` (embedded default)."""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from broker.config import Settings, SettingsError, load_settings
from broker.errors import BackendUnavailable, PolicyInvalid
from broker.policy.model import Policy
from broker.policy.rekey import with_added_client_key
from broker.service.credentials import new_client_secret, secret_sha256

DEV_BANNER = """\
============================================================================
  capbroker DEV MODE: in-process signing key, in-memory state.
  NOT FOR PRODUCTION. Keys, revocations and the audit trail vanish on exit.
  Production: broker serve --config FILE (Vault/OpenBao + Redis).
============================================================================"""


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the broker on Vault/OpenBao + Redis (production)")
    serve.add_argument("--config", help="settings file (YAML); every setting also from BROKER_* variables")
    serve.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)  # started by the parent
    serve.set_defaults(run=run_serve)
    dev = commands.add_parser("dev", help="run the broker with no servers: local key, in-memory state (not production)")
    dev.add_argument("--scopes", default="scopes", help="policy directory (default: scopes)")
    dev.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8700, help="the port (default 8700)")
    dev.add_argument("--admin-key-sha256", help="use this admin key hash instead of generating an admin key")
    dev.add_argument("--agent", help="the agent to make a key for (default: reviewer, else the first agent)")
    dev.add_argument("--service", help="the service to make a key for (default: the first service)")
    dev.set_defaults(run=run_dev)


def _uvicorn_run(app: Any, settings: Settings, *, shared_port: bool = False) -> None:
    import uvicorn

    if shared_port:  # one of several workers on the same port
        from broker.cli.workers import reuseport_socket

        sock = reuseport_socket(settings.host, settings.port)
        # The socket object itself, not its fd: uvicorn reopens a bare fd as AF_UNIX, and
        # asyncio then leaves Nagle on (TCP_NODELAY is set for INET sockets only): +40 ms.
        config = uvicorn.Config(
            app, access_log=False, log_level="info", server_header=False, proxy_headers=False, http=_protocol()
        )
        uvicorn.Server(config).run(sockets=[sock])
        return
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
        server_header=False,
        proxy_headers=False,
        http=_protocol(),
    )


def _protocol() -> Any:
    """(Both runs also leave ``proxy_headers`` off: the broker reads no client address or
    scheme from the request, so no ``X-Forwarded-*`` header may change them either.)"""
    from broker.cli.http_protocol import GatheringHttpToolsProtocol

    return GatheringHttpToolsProtocol


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except (SettingsError, OSError) as e:
        print(f"broker serve: {e}", file=sys.stderr)
        return 2
    if settings.signer != "vault" or settings.state != "redis":
        print("broker serve: runs on Vault + Redis only; `broker dev` is the embedded default", file=sys.stderr)
        return 2
    if not settings.audit_archive_dir:
        print(
            "broker serve: audit_archive_dir is required: Redis keeps only a bounded tail of the audit"
            " chain and older events move there (a directory every replica shares; see SECURITY.md)",
            file=sys.stderr,
        )
        return 2
    try:
        from broker.backends.audit_archive import ArchiveDir

        ArchiveDir(Path(settings.audit_archive_dir)).check()
    except OSError as e:
        print(f"broker serve: {e}", file=sys.stderr)
        return 2
    if not args.as_worker:  # workers: their parent checked it
        from broker.cli.workers import port_in_use

        held = port_in_use(settings.host, settings.port)
        if held is not None:
            print(f"broker serve: {held}", file=sys.stderr)
            return 2
    if not args.as_worker and not _redis_fit(settings):
        return 2
    if args.as_worker:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's reload handler is installed
    if settings.workers > 1 and not args.as_worker:
        from broker.cli.workers import hold_port, supervise

        with hold_port(settings.host, settings.port):
            return supervise(args.config, settings.workers)
    try:
        from broker.runtime import build_app

        _uvicorn_run(build_app(settings), settings, shared_port=args.as_worker)
    except PolicyInvalid as e:
        print(f"broker serve: the policy is invalid, not starting:\n{e.reason}", file=sys.stderr)
        return 1
    except BackendUnavailable as e:  # the Vault login at start (vault_auth: approle)
        print(f"broker serve: not starting: {e.reason}", file=sys.stderr)
        return 3
    return 0


def _redis_fit(settings: Settings) -> bool:
    """Refuse a Redis that evicts or forgets (SECURITY.md, Redis requirements); warn once,
    loudly, about one that may lose recent writes."""
    from broker.runtime import redis_durability

    verdict = redis_durability(settings)
    if verdict.refusal is not None:
        print(f"broker serve: not starting: {verdict.refusal}", file=sys.stderr)
        return False
    for warning in verdict.warnings:
        print(f"broker serve: WARNING: {warning}", file=sys.stderr)
    refusal = _legacy_refusal(settings)
    if refusal is not None:
        print(f"broker serve: not starting: {refusal}", file=sys.stderr)
        return False
    origin = "redis_prefix" if settings.redis_prefix else "derived from the issuer"
    print(f"broker serve: Redis keys and channels under {settings.key_prefix!r} ({origin})", file=sys.stderr)
    sys.stderr.flush()
    return True


def _legacy_refusal(settings: Settings) -> str | None:
    from broker.backends.redis_legacy import legacy_keys_present, legacy_refusal
    from broker.verify.redis_keys import on_cluster

    if settings.redis_prefix or on_cluster(settings.redis_url):
        return None  # no deployment before redis_prefix ran on a cluster (it was not supported)
    try:
        present = legacy_keys_present(settings.redis_url, timeout=max(settings.backend_timeout, 2.0))
    except Exception as e:  # noqa: BLE001 -- the durability check just reached it; say which, never the URL
        return f"Redis did not answer the upgrade check ({type(e).__name__})"
    return legacy_refusal(settings.redis_prefix, settings.key_prefix, present)


def _pick(names: list[str], wanted: str | None, preferred: str) -> str | None:
    if wanted is not None:
        return wanted if wanted in names else None
    return preferred if preferred in names else (sorted(names)[0] if names else None)


def _dev_overlay(policy: Policy, keys: dict[str, str]) -> Policy:
    for name, digest in keys.items():
        if name in policy.agents or name in policy.services:
            policy = with_added_client_key(policy, name, digest)  # beside its own keys
    return policy


def run_dev(args: argparse.Namespace) -> int:
    from broker.backends.local_signer import LocalSigningBackend
    from broker.backends.memory_state import MemoryState
    from broker.http.app import create_app
    from broker.policy.loader import load_policy
    from broker.service.audit_recorder import AuditRecorder
    from broker.service.broker import Broker

    try:
        policy = load_policy(args.scopes)
    except PolicyInvalid as e:
        print(f"broker dev: the policy in {args.scopes} is invalid:\n{e.reason}", file=sys.stderr)
        return 1
    agent = _pick(list(policy.agents), args.agent, "reviewer")
    service = _pick(list(policy.services), args.service, "git-gateway")
    if agent is None:
        print("broker dev: no such agent in the policy", file=sys.stderr)
        return 2
    secrets_out: list[tuple[str, str]] = []
    keys: dict[str, str] = {}
    for label, name in (("agent", agent), ("service", service)):
        if name is not None:
            secret = new_client_secret()
            keys[name] = secret_sha256(secret)
            secrets_out.append((f"{label} {name}", secret))
    admin_hash = args.admin_key_sha256
    if admin_hash is None:
        admin_secret = new_client_secret()
        admin_hash = secret_sha256(admin_secret)
        secrets_out.append(("admin", admin_secret))
    overlay = partial(_dev_overlay, keys=keys)
    issuer = f"http://{args.host}:{args.port}"
    state = MemoryState()
    from broker.backends.oidc_keys import OidcKeys
    from broker.service.audit_checkpointer import Checkpointer
    from broker.service.metrics import Metrics

    signer = LocalSigningBackend.generate()
    audit = AuditRecorder(state)
    metrics = Metrics()
    broker = Broker(
        issuer=issuer,
        policy_dir=Path(args.scopes),
        policy=overlay(policy),
        signer=signer,
        state=state,
        audit=audit,
        checkpoints=Checkpointer(audit, signer, issuer=issuer, metrics=metrics),  # the in-process key signs them
        metrics=metrics,
        admin_key_hashes=(admin_hash,),
        overlay=overlay,
        issuer_keys=OidcKeys(),  # jwt identities work in dev too; vault ones need `broker serve`
    )
    print(DEV_BANNER, file=sys.stderr)
    print(f"issuer: {issuer}    policy: {args.scopes} ({policy.digest[:12]})", file=sys.stderr)
    for label, secret in secrets_out:
        print(f"{label + ' key:':<28} {secret}", file=sys.stderr)
    sys.stderr.flush()
    import uvicorn

    uvicorn.run(
        create_app(broker, handle_sighup=True, freeze_heap=True),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )
    return 0
