"""compose's one-shot key maker (``keys`` in infra/compose.yaml), like ``broker dev``.

The example policy in ``scopes/`` holds hashes of secrets nobody has. This makes a fresh
client key for every ``key`` identity in it and one admin key, prints them once (``docker
compose logs keys``), and writes what the brokers load to OUT: ``scopes/`` (the example
files with the new hashes) and ``broker.yaml`` (SETTINGS plus the admin's hash and that
policy directory). Only hashes are written; the keys exist only in that output. For
trying the stack: production policies carry their own hashes (``broker keys new-client``).

    python infra/compose_keys.py SCOPES SETTINGS OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from broker.policy.loader import load_policy
from broker.policy.model import KeyIdentity
from broker.service.credentials import new_client_secret, secret_sha256


def make_keys(scopes: Path, settings: Path, out: Path) -> list[tuple[str, str]]:
    """Write OUT/scopes and OUT/broker.yaml; the (who, key) pairs to print."""
    policy = load_policy(scopes)
    new_hash: dict[str, str] = {}
    keys: list[tuple[str, str]] = []
    for kind, principals in (("agent", policy.agents), ("service", policy.services)):
        for name, principal in sorted(principals.items()):
            if isinstance(principal.identity, KeyIdentity):
                secret = new_client_secret()
                new_hash[principal.identity.sha256] = secret_sha256(secret)
                keys.append((f"{kind} {name}", secret))
    out_scopes = out / "scopes"
    out_scopes.mkdir(parents=True, exist_ok=True)
    for stale in out_scopes.glob("*.yaml"):
        stale.unlink()
    for source in sorted(scopes.glob("*.yaml")):
        text = source.read_text()
        for old, new in new_hash.items():
            text = text.replace(old, new)
        (out_scopes / source.name).write_text(text)
    load_policy(out_scopes)  # what the brokers will load: refused here first if wrong
    admin = new_client_secret()
    keys.append(("admin", admin))
    extra = f"\n# written by infra/compose_keys.py\nscopes: {out_scopes}\nadmin_key_sha256: [{secret_sha256(admin)}]\n"
    (out / "broker.yaml").write_text(settings.read_text() + extra)
    return keys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    keys = make_keys(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    print("capbroker compose: fresh keys (shown once; the brokers hold only their hashes)")
    for who, secret in keys:
        print(f"{who + ' key:':<28} {secret}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
