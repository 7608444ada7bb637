"""``broker token get`` and ``broker git-credential``: an agent's tokens, cached on disk.

    CAPBROKER_KEY=cbk_... broker token get --broker URL --task T --scope S [--resource R --action A] [-o json]
    git config credential.https://gw.internal/git/.helper \\
        "broker git-credential --broker URL --task T --scope S --key-file /run/agent-key"

Both reuse a token until a quarter of its lifetime (at most 60 s) remains
(``broker.client.freshness``), from a per-user cache directory (``broker.client.disk_cache``).
The git helper answers ``get`` with ``username=x-capbroker`` and the token as the password
(git then sends ``Authorization: Basic base64(x-capbroker:TOKEN)``); ``store`` and
``erase`` are ignored. With ``--gateway`` it answers only for that gateway's URLs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from broker.cli.agent_args import UsageError, add_broker_args, asked_token, client_of, report_failure, ttl_of
from broker.client import BrokerCallFailed

GIT_USERNAME = "x-capbroker"


def register_token_get(token_commands: Any) -> None:
    get = token_commands.add_parser(
        "get", help="print a token for a task and scope (cached until shortly before expiry)"
    )
    add_broker_args(get)
    get.add_argument("--resource", help="narrow the scope to this resource")
    get.add_argument("--action", help="narrow the scope to this one action")
    get.add_argument("-o", "--output", choices=["token", "json"], default="token", help="the token alone, or JSON")
    get.add_argument("--no-cache", action="store_true", help="always mint; keep nothing on disk")
    get.set_defaults(run=run_token_get)


def register(commands: Any) -> None:
    helper = commands.add_parser("git-credential", help="a git credential helper handing out a cached token")
    add_broker_args(helper)
    helper.add_argument("--gateway", help="answer only for this gateway's URLs (recommended)")
    helper.add_argument("operation", help="what git asks: get (answered), store and erase (ignored)")
    helper.set_defaults(run=run_git_credential)


def run_token_get(args: argparse.Namespace) -> int:
    try:
        token = asked_token(args)
    except (UsageError, BrokerCallFailed) as e:
        return report_failure(e)
    if args.output == "json":
        print(json.dumps(token.to_json(time.time()), indent=2))
    else:
        print(token.token)
    return 0


def _asked(lines: list[str]) -> dict[str, str]:
    asked: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            asked[key] = value
    return asked


def _for_gateway(asked: dict[str, str], gateway: str | None) -> bool:
    """Whether git asks about the gateway (always, when no gateway is named)."""
    if gateway is None:
        return True
    url = urlsplit(gateway)
    return asked.get("protocol") == url.scheme and asked.get("host") == url.netloc


def run_git_credential(args: argparse.Namespace) -> int:
    lines = [line.rstrip("\n") for line in sys.stdin]
    if args.operation != "get":
        return 0  # store, erase: the broker's tokens are not git's to keep or drop
    if not _for_gateway(_asked(lines), args.gateway):
        return 0  # not ours: say nothing, git asks the next helper
    try:
        with client_of(args) as client:
            token = client.token(args.task, args.scope, ttl=ttl_of(args))
    except (UsageError, BrokerCallFailed) as e:
        return report_failure(e)
    sys.stdout.write(f"username={GIT_USERNAME}\npassword={token.token}\npassword_expiry_utc={token.expires_at}\n")
    return 0
