"""The ``broker`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.cli import agent_cmd, gateway_cmd, keys_cmd, ops_cmd, policy_cmd, run_cmd, serve_cmd, token_cmd, vault_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description="capbroker: capability-scoped credentials for agents")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy_cmd.register(commands)
    token_cmd.register(commands)
    keys_cmd.register(commands)
    serve_cmd.register(commands)
    ops_cmd.register(commands)
    run_cmd.register(commands)
    agent_cmd.register(commands)
    vault_cmd.register(commands)
    gateway_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
