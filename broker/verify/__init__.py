"""The verifier library internal services import (README, "Verifying tokens in a service").

from broker.verify import Verifier, TokenRejected
v = Verifier(issuer=..., audience=..., jwks_url=...)
grant = v.verify(token)
grant.allows("bucket", "s3://acme-reports/agents/t1/out.csv", "write")

# a DPoP-bound token (cnf.jkt) needs the request's proof, method and URL
grant = v.verify(token, dpop=proof_header, method="GET", url="https://storage.internal/reports/a.csv")

# revocation: the broker's Redis URL builds a RevocationFeed (a local set fed by pub/sub,
# no round trip per verification, failing closed while it is down); RedisRevocation(url,
# issuer=...) asks Redis on every verification instead. The keys and channel are under the
# broker's redis_prefix: derived from the issuer unless the broker sets one, then pass it
v = Verifier(issuer=..., audience=..., jwks_url=..., revocation="redis://broker-redis:6379/0")
v = Verifier(..., revocation="redis://broker-redis:6379/0", redis_prefix="capbroker:prod:")

``pip install capbroker`` is enough for keys and introspection; reading the broker's Redis
(a URL as ``revocation``, ``RevocationFeed``, ``RedisRevocation``) needs
``pip install 'capbroker[redis]'``.
"""

from typing import TYPE_CHECKING, Any

from broker.dpop import MemoryReplayCache, ProofReplayCache
from broker.errors import TokenRejected
from broker.verify.grant import Grant
from broker.verify.introspection import IntrospectionClient
from broker.verify.jwks import RemoteJwks
from broker.verify.revocation import RevocationCheck, StaticRevocationList, import_with_redis
from broker.verify.verifier import Verifier

if TYPE_CHECKING:
    from broker.verify.redis_revocation import RedisRevocation
    from broker.verify.revocation_feed import RevocationFeed, RevocationUnavailable

#: the Redis revocation sources, imported when first named: ``redis`` is needed only by a
#: service that reads the broker's Redis (``pip install 'capbroker[redis]'``)
_WITH_REDIS = {
    "RedisRevocation": "broker.verify.redis_revocation",
    "RevocationFeed": "broker.verify.revocation_feed",
    "RevocationUnavailable": "broker.verify.revocation_feed",
}


def __getattr__(name: str) -> Any:
    module = _WITH_REDIS.get(name)
    if module is None:
        raise AttributeError(f"module 'broker.verify' has no attribute {name!r}")
    return getattr(import_with_redis(module), name)


__all__ = [
    "Verifier",
    "Grant",
    "TokenRejected",
    "RevocationCheck",
    "StaticRevocationList",
    "RedisRevocation",
    "RevocationFeed",
    "RevocationUnavailable",
    "IntrospectionClient",
    "RemoteJwks",
    "ProofReplayCache",
    "MemoryReplayCache",
]
