"""``single_match``: the one principal an identity matches, or why there is not one.

Every identity method resolves the same way: each candidate principal either matches or
says why not, and exactly one must match. None is a refusal with the reasons; two or more
is an ambiguous policy, refused too: a credential never picks between principals. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class HasIdentity(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> object: ...


P = TypeVar("P", bound=HasIdentity)


@dataclass
class NoSingleMatch(Exception, Generic[P]):
    """Not exactly one match: the ``matched`` principals (two or more: ambiguous) or,
    when none matched, each candidate's ``misses`` (``"<name>: <reason>"``)."""

    matched: list[P] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)


def single_match(principals: Iterable[P], reason_against: Callable[[P], str | None]) -> P:
    """The one principal ``reason_against`` finds nothing against, else ``NoSingleMatch``."""
    matched: list[P] = []
    misses: list[str] = []
    for principal in principals:
        reason = reason_against(principal)
        if reason is None:
            matched.append(principal)
        else:
            misses.append(f"{principal.name}: {reason}")
    if len(matched) != 1:
        raise NoSingleMatch(matched, misses)
    return matched[0]
