"""``broker keys withdraw KID``: an operator withdraws a session key for good.

Incident response for a leaked session key (a worker's memory dump): the key is marked
withdrawn in Redis and announced on the revocation channel. Every broker stops publishing
and signing with it, and every verifier with a revocation feed refuses its tokens, within
a second; an entry written back later is never published again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from broker.config import SettingsError, load_settings
from broker.token.endorsement import MAX_PUBLISH_TAIL, MAX_SIGN_SPAN, claimed_publish_until
from broker.token.keys import is_kid


def register(keys_commands: Any) -> None:
    withdraw = keys_commands.add_parser(
        "withdraw", help="withdraw a session key for good: no broker signs with it, no verifier accepts its tokens"
    )
    withdraw.add_argument("kid", help="the session key's kid (s-<16 hex digits>, from the token header or the JWKS)")
    withdraw.add_argument("--config", help="settings file (the Redis the brokers share)")
    withdraw.set_defaults(run=run_withdraw)


async def _withdraw(config: str | None, kid: str) -> int:
    from broker.backends.endorsed_signer import endorsed_keys_key, withdraw_keys
    from broker.verify.redis_options import async_redis

    settings = load_settings(config)
    redis = async_redis(settings.redis_url, settings.backend_timeout)
    try:
        stored = await redis.hget(endorsed_keys_key(settings.state_prefix), kid)
        # until the key would have left the JWKS anyway; the longest possible if unknown
        until = claimed_publish_until(stored) or int(time.time()) + MAX_SIGN_SPAN + MAX_PUBLISH_TAIL
        await withdraw_keys(redis, settings.state_prefix, {kid: until})
        return until
    finally:
        await redis.aclose()


def run_withdraw(args: argparse.Namespace) -> int:
    if not is_kid(args.kid):
        print("broker keys withdraw: that is not a kid", file=sys.stderr)
        return 2
    try:
        until = asyncio.run(_withdraw(args.config, args.kid))
    except (SettingsError, OSError) as e:
        print(f"broker keys withdraw: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- Redis refused or is unreachable: say which, never its text
        print(f"broker keys withdraw: Redis refused or is unavailable ({type(e).__name__})", file=sys.stderr)
        return 1
    print(f"withdrawn: {args.kid} (remembered until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))})")
    return 0
