"""``broker gateway --config gateway.yaml``: run the gateway (docs/gateway.md)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("gateway", help="run the gateway in front of git and HTTP upstreams")
    parser.add_argument("--config", help="gateway.yaml (settings also from GATEWAY_<NAME>)")
    parser.add_argument("--check", action="store_true", help="check the settings and exit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from broker.gateway.config import ConfigError
    from broker.gateway.server import describe, load, serve

    try:
        config = load(args.config, dict(os.environ))
    except (ConfigError, OSError) as e:
        print(f"gateway settings: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(describe(config))
        return 0
    return serve(config, args.config)
