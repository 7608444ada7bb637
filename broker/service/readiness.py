"""The signing self-test and readiness.

The self-test signs one throwaway token through the real signing backend and verifies it
against the keys the broker publishes: it proves the key can sign and that the JWKS
verifiers fetch will accept what is signed. Until it passes, the broker mints nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from broker.capability import Capability
from broker.errors import BackendUnavailable, BrokerError
from broker.service.broker import Broker
from broker.service.policy_follower import policy_check
from broker.token.mint import issue_claims
from broker.token.verify import verify_token

SELF_TEST_AUDIENCE = "capbroker-self-test"  # no service accepts this audience
_PROBE = Capability.build("http", "https://self-test.invalid/", ("GET",), "self-test")
READINESS_CACHE_SECONDS = 1.0


async def self_test(broker: Broker) -> None:
    """Sign and verify one token; ``BackendUnavailable`` if either step fails."""
    now = broker.now()
    claims = issue_claims(
        issuer=broker.issuer,
        agent="self-test",
        audience=SELF_TEST_AUDIENCE,
        task="self-test",
        capabilities=[_PROBE],
        now=now,
        ttl=1,
    )
    token = await broker.signer.sign(claims)
    keys = await broker.signer.keyset()
    try:
        verify_token(token, keys, issuer=broker.issuer, audience=SELF_TEST_AUDIENCE, now=now, leeway=0)
    except BrokerError as e:
        raise BackendUnavailable(f"self-test token did not verify against the published keys ({e.code})") from None


@dataclass
class Readiness:
    """``/readyz``: state store reachable, signing self-test passing (cached for a second
    so a probe storm does not become a signing storm), and the policy in force the one the
    other processes announced (``policy_follower``; not cached). The answer names the
    policy digest in force."""

    broker: Broker
    _checked_at: float = -1.0
    _result: dict[str, Any] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._result is None or now - self._checked_at >= READINESS_CACHE_SECONDS:
                self._result = await self._run()
                self._checked_at = time.monotonic()
            probed = self._result
        policy = policy_check(self.broker)
        return {
            "ready": probed["ready"] and policy == "ok",
            "checks": {**probed["checks"], "policy": policy},
            "policy": self.broker.policy.digest,
        }

    async def _revocations_current(self) -> None:
        if getattr(self.broker.revocations, "ready", True) is not True:
            raise BackendUnavailable("the revocation feed is not current")

    async def _run(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        probes: dict[str, Callable[[], Awaitable[None]]] = {
            "state": self.broker.state.ping,
            "signing": lambda: self_test(self.broker),
        }
        if self.broker.revocations is not None:
            probes["revocations"] = self._revocations_current
        for name, probe in probes.items():
            try:
                await probe()
                checks[name] = "ok"
            except BrokerError as e:
                checks[name] = e.code
        ready = all(v == "ok" for v in checks.values())
        self.broker.ready_for_signing = checks["signing"] == "ok" or self.broker.ready_for_signing
        return {"ready": ready, "checks": checks}
