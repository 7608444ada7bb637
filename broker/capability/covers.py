"""``covers``: the one matching function (README, "Writing a policy file"). It is a partial order on capabilities."""

from __future__ import annotations

from collections.abc import Iterable

from broker.capability.model import Capability
from broker.capability.resources import validate_resource
from broker.errors import InvalidRequest


def resource_covers(granted: str, requested: str) -> bool:
    """Both canonical. A ``/``-ended grant covers itself and its descendants by whole
    segments; any other grant covers only itself."""
    if granted == requested:
        return True
    return granted.endswith("/") and requested.startswith(granted)


def covers(granted: Capability, requested: Capability) -> bool:
    """True when everything ``requested`` allows, ``granted`` allows too (same scope)."""
    return (
        granted.kind == requested.kind
        and granted.scope == requested.scope
        and resource_covers(granted.resource, requested.resource)
        and set(requested.actions) <= set(granted.actions)
    )


def allows(capabilities: Iterable[Capability], kind: str, resource: str, action: str) -> bool:
    """Would any of ``capabilities`` allow ``action`` on ``resource``?

    A resource outside the grammar (``..``, ``%2e``, ``//``, upper-case host, ...) is never
    allowed: nothing is normalised first.
    """
    if not all(isinstance(v, str) for v in (kind, resource, action)):  # untyped callers
        return False
    try:
        validate_resource(kind, resource)
    except InvalidRequest:
        return False
    return any(
        cap.kind == kind and action in cap.actions and resource_covers(cap.resource, resource) for cap in capabilities
    )
