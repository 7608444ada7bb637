"""Policy: the admins' scopes, agents and services, compiled once; and ``decide``.

Pure: no network, no clock reads, no framework.
"""

from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.policy.decide import Allow, Decision, Deny, TokenPlan, decide
from broker.policy.durations import parse_duration
from broker.policy.loader import load_policy
from broker.policy.model import (
    DEFAULT_TTL,
    Agent,
    Identity,
    JwtIdentity,
    KeyIdentity,
    Location,
    Policy,
    Rate,
    Scope,
    Service,
    VaultIdentity,
)
from broker.policy.requests import MintRequest, ScopeRequest, parse_mint_request

__all__ = [
    "load_policy",
    "decide",
    "parse_mint_request",
    "parse_duration",
    "Allow",
    "Deny",
    "Decision",
    "TokenPlan",
    "MintRequest",
    "ScopeRequest",
    "Policy",
    "Scope",
    "Agent",
    "Service",
    "Identity",
    "KeyIdentity",
    "JwtIdentity",
    "VaultIdentity",
    "Rate",
    "Location",
    "DEFAULT_TTL",
    "MAX_TOKEN_TTL",
]
