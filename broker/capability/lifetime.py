"""How long a capability token may live, and how long a revocation outlives the tokens it
names: the one definition the policy compiler, the minting code, the signer, the verifier
and the revocation feed all read.
"""

from __future__ import annotations

from typing import Final

#: No token lives longer than this (seconds), whatever a scope or ``global_max_ttl`` says;
#: an operator may only lower it.
MAX_TOKEN_TTL: Final = 3600

#: A revocation is kept this long (seconds) past the last moment a token it names could
#: still verify: clock skew between the minting replica, Redis and a verifier.
REVOCATION_GRACE: Final = 120
