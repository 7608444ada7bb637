"""``Capability``: one kind, one resource, a set of actions, and the scope it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from broker.capability.budget import Budget
from broker.capability.kinds import kind_named
from broker.capability.names import is_name
from broker.capability.resources import validate_resource
from broker.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Capability:
    """Always valid once built: the constructor checks kind, resource grammar and actions.

    ``actions`` is kept in the kind's canonical order, so equal capabilities are equal
    tuples and serialise to the same bytes.
    """

    kind: str
    resource: str
    actions: tuple[str, ...]
    scope: str
    #: the scope's gateway budget, if it sets one (docs/gateway.md); not part of ``covers``
    budget: Budget | None = None

    def __post_init__(self) -> None:
        kind = kind_named(self.kind)
        validate_resource(self.kind, self.resource)
        if not isinstance(self.actions, tuple) or not self.actions:
            raise InvalidRequest("actions must be a non-empty list")
        if not all(isinstance(a, str) for a in self.actions):
            raise InvalidRequest("actions must be strings")
        if len(set(self.actions)) != len(self.actions):
            raise InvalidRequest("actions must not repeat")
        if kind.canonical_actions(set(self.actions)) != self.actions:
            raise InvalidRequest(f"actions must be in canonical order {kind.actions}")
        if not is_name(self.scope):
            raise InvalidRequest(f"scope name {self.scope!r} is not valid")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise InvalidRequest("budget must be a Budget")

    @classmethod
    def build(cls, kind: str, resource: str, actions: object, scope: str, budget: Budget | None = None) -> Capability:
        """Build from unordered actions (any iterable of strings); orders them canonically."""
        if isinstance(actions, str) or not isinstance(actions, (list, tuple, set, frozenset)):
            raise InvalidRequest("actions must be a list of strings")
        if not all(isinstance(a, str) for a in actions):
            raise InvalidRequest("actions must be strings")
        acts = list(actions)
        if len(set(acts)) != len(acts):
            raise InvalidRequest("actions must not repeat")
        ordered = kind_named(kind).canonical_actions(set(acts))
        return cls(kind, resource, ordered, scope, budget)

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form; key order is fixed (formats only grow): ``budget`` last,
        only when set."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "resource": self.resource,
            "actions": list(self.actions),
            "scope": self.scope,
        }
        if self.budget is not None:
            out["budget"] = self.budget.to_json()
        return out

    @classmethod
    def from_json(cls, value: object) -> Capability:
        """The capability a token's JSON names, checked as strictly as the constructor.

        Tokens repeat the same capabilities, so the ones already built are remembered by
        their exact fields (a few thousand at most): the same four values always make the
        same capability, and only values the constructor accepted are remembered.
        """
        if not isinstance(value, dict) or not (value.keys() == _JSON_FIELDS or value.keys() == _JSON_FIELDS_BUDGET):
            raise InvalidRequest("a capability is exactly {kind, resource, actions, scope, budget?}")
        if "budget" in value:
            plain = cls.from_json({k: v for k, v in value.items() if k != "budget"})
            return cls(plain.kind, plain.resource, plain.actions, plain.scope, Budget.from_json(value["budget"]))
        actions = value["actions"]
        if not isinstance(actions, list):
            raise InvalidRequest("actions must be a list")
        kind, resource, scope = value["kind"], value["resource"], value["scope"]
        if not isinstance(kind, str) or not isinstance(resource, str) or not isinstance(scope, str):
            raise InvalidRequest("kind, resource and scope must be strings")
        fields = (kind, resource, tuple(actions), scope)
        try:
            known = _BUILT.get(fields)
        except TypeError:  # an unhashable action (a list, an object): the constructor refuses it
            known = None
        if known is not None:
            return known
        built = cls(*fields)
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        _BUILT[fields] = built
        return built


_JSON_FIELDS: Final = frozenset({"kind", "resource", "actions", "scope"})
_JSON_FIELDS_BUDGET: Final = _JSON_FIELDS | {"budget"}
#: capabilities built from token JSON, by their exact fields (``Capability.from_json``).
#: Keys hold only strings: no other JSON value equals a string, so a lookup with any other
#: action can never find an entry.
_BUILT: dict[tuple[str, str, tuple[Any, ...], str], Capability] = {}
_MAX_BUILT: Final = 4096
