"""Capabilities: what one token allows. Pure: the grammar of resources, the actions of each
kind, and ``covers``, the one matching function used by minting, narrowing, delegation and
verification."""

from broker.capability.budget import Budget
from broker.capability.covers import allows, covers
from broker.capability.kinds import KINDS, Kind, kind_named
from broker.capability.model import Capability
from broker.capability.resources import is_root_resource, validate_resource

__all__ = [
    "KINDS",
    "Budget",
    "Capability",
    "Kind",
    "allows",
    "covers",
    "is_root_resource",
    "kind_named",
    "validate_resource",
]
