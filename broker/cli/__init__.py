"""The ``broker`` command line.

Exit codes, the same for every command: 0 ok; 1 a finding (an invalid policy, a denied
explanation, a rejected token, a broken audit chain); 2 a usage or settings error; 3 a
backend (Vault, Redis) that did not answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("capbroker")
    except PackageNotFoundError:  # pragma: no cover -- run from a source tree without install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from broker.cli import (  # here, not at import: without capbroker[server], main() says what is missing
        agent_cmd,
        aws_cmd,
        gateway_cmd,
        keys_cmd,
        ops_cmd,
        policy_cmd,
        run_cmd,
        serve_cmd,
        token_cmd,
        vault_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="broker",
        description="capbroker: capability-scoped credentials for agents",
        epilog="exit codes: 0 ok, 1 finding or deny, 2 usage or settings, 3 backend unavailable",
    )
    parser.add_argument("--version", action="version", version=f"capbroker {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy_cmd.register(commands)
    token_cmd.register(commands)
    keys_cmd.register(commands)
    serve_cmd.register(commands)
    ops_cmd.register(commands)
    run_cmd.register(commands)
    agent_cmd.register(commands)
    aws_cmd.register(commands)
    vault_cmd.register(commands)
    gateway_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as e:
        print(
            f"broker: {e.name} is not installed: the broker, the gateway and the broker command need "
            "pip install 'capbroker[server]' (pip install capbroker is the verifier library alone)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
