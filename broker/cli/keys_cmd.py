"""``broker keys new-client``: a fresh client secret and the hash a policy file holds."""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli import ops_cmd, withdraw_cmd
from broker.service.credentials import new_client_secret, secret_sha256


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="client secrets")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new = sub.add_parser("new-client", help="print a fresh client secret and its sha256 for a policy file")
    new.set_defaults(run=run_new_client)
    ops_cmd.register_rotate(sub)
    withdraw_cmd.register(sub)


def run_new_client(args: argparse.Namespace) -> int:
    secret = new_client_secret()
    print(f"secret: {secret}")
    print(f"sha256: {secret_sha256(secret)}")
    print("# give the secret to the agent; put only the sha256 in the policy file:")
    print(f"#   identity: {{key: {{sha256: {secret_sha256(secret)}}}}}")
    return 0
