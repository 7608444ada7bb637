"""The closed set of capability kinds and, for each, its closed set of actions (README, "Writing a policy file")."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from broker.errors import InvalidRequest, quoted


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    actions: tuple[str, ...]  # canonical order; tokens list actions in this order

    def canonical_actions(self, actions: frozenset[str] | set[str]) -> tuple[str, ...]:
        """Order ``actions`` canonically; refuses any action the kind does not have."""
        unknown = set(actions) - set(self.actions)
        if unknown:
            raise InvalidRequest(f"unknown action(s) {quoted(sorted(unknown))} for kind {self.name!r}")
        return tuple(a for a in self.actions if a in actions)


KINDS: Final = MappingProxyType(
    {
        k.name: k
        for k in (
            Kind("git", ("read", "write")),
            Kind("bucket", ("list", "read", "write", "delete")),
            Kind("http", ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")),
            Kind("vault-kv", ("read", "list")),
            Kind("database", ("connect",)),
        )
    }
)


def kind_named(name: object) -> Kind:
    if not isinstance(name, str) or name not in KINDS:
        raise InvalidRequest(f"unknown kind {name!r}; kinds are {', '.join(KINDS)}")
    return KINDS[name]
