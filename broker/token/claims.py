"""The claims of a capability token (docs/tokens.md), type-checked in both directions.

Serialisation is canonical: claims in the fixed order below, optional ones only when set.
Unknown claims are refused on verification: a claim this verifier does not understand
may be a restriction it would otherwise silently drop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from broker.capability import Capability
from broker.capability.names import ANY_AGENT, NAME, is_audience, is_task, task_ref
from broker.errors import InvalidRequest

REQUIRED: Final = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "task", "cap")
OPTIONAL: Final = ("cnf", "act")
_REQUIRED_SET: Final = frozenset(REQUIRED)
_KNOWN: Final = frozenset(REQUIRED + OPTIONAL)
MAX_TIME: Final = 1 << 40  # seconds since the epoch; far beyond any real token
MAX_CAPABILITIES: Final = 32
MAX_ACT_DEPTH: Final = 8
_JTI = re.compile(r"[A-Za-z0-9_-]{22}")  # 128 random bits, base64url


def is_jti(value: object) -> bool:
    return isinstance(value, str) and _JTI.fullmatch(value) is not None


_JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # SHA-256 thumbprint, base64url
SUBJECT_PREFIX: Final = "agent:"
_SUBJECT = re.compile(re.escape(SUBJECT_PREFIX) + NAME.pattern)  # agent:<name>, in one match


class ClaimsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Actor:
    """RFC 8693 ``act``: who delegated, and who delegated to them."""

    sub: str
    act: Actor | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sub": self.sub}
        if self.act is not None:
            out["act"] = self.act.to_json()
        return out

    @property
    def depth(self) -> int:
        return 1 + (self.act.depth if self.act else 0)


@dataclass(frozen=True, slots=True)
class Claims:
    iss: str
    sub: str
    aud: str
    iat: int
    nbf: int
    exp: int
    jti: str
    task: str
    cap: tuple[Capability, ...]
    cnf_jkt: str | None = None
    act: Actor | None = None

    @property
    def agent(self) -> str:
        return self.sub[len(SUBJECT_PREFIX) :]

    @property
    def delegators(self) -> tuple[str, ...]:
        """The agents that delegated this token, nearest first (``act``, then its ``act``,
        ...); the last is the agent that minted the root token. Empty if not delegated."""
        names: list[str] = []
        actor = self.act
        while actor is not None:
            names.append(actor.sub[len(SUBJECT_PREFIX) :])
            actor = actor.act
        return tuple(names)

    @property
    def root_agent(self) -> str:
        """The agent that minted the root token of this token's chain: the task's owner."""
        delegators = self.delegators
        return delegators[-1] if delegators else self.agent

    @property
    def task_ref(self) -> str:
        """The task's identity (``broker.capability.names.task_ref``): root agent and id."""
        return task_ref(self.root_agent, self.task)

    @property
    def task_refs(self) -> tuple[str, str]:
        """Every task reference whose revocation revokes this token: its own task, and its
        task id revoked for every agent (an admin's revocation that names no agent)."""
        return self.task_ref, task_ref(ANY_AGENT, self.task)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "jti": self.jti,
            "task": self.task,
            "cap": [c.to_json() for c in self.cap],
        }
        if self.cnf_jkt is not None:
            out["cnf"] = {"jkt": self.cnf_jkt}
        if self.act is not None:
            out["act"] = self.act.to_json()
        return out


def _int(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    if type(value) is not int or not 0 <= value < MAX_TIME:  # bool is not an int here
        raise ClaimsError(f"{name} must be an integer number of seconds")
    return value


def _subject(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SUBJECT.fullmatch(value):
        raise ClaimsError(f"{what} must be agent:<name>")
    return value


def _actor(value: object, depth: int = 1) -> Actor:
    if depth > MAX_ACT_DEPTH:
        raise ClaimsError("act chain too deep")
    if not isinstance(value, dict) or "sub" not in value or not set(value) <= {"sub", "act"}:
        raise ClaimsError("act must be {sub, act?}")
    inner = _actor(value["act"], depth + 1) if "act" in value else None  # "act": null is refused
    return Actor(_subject(value["sub"], "act.sub"), inner)


def claims_from_json(payload: dict[str, Any]) -> Claims:
    """Type-check every claim; raise ``ClaimsError`` naming the first one that is off."""
    if not payload.keys() >= _REQUIRED_SET:
        raise ClaimsError(f"missing claim(s) {[name for name in REQUIRED if name not in payload]}")
    if not _KNOWN.issuperset(payload):
        raise ClaimsError(f"unknown claim(s) {sorted(set(payload) - _KNOWN)}")
    iss = payload["iss"]
    if not isinstance(iss, str) or not 0 < len(iss) <= 512:
        raise ClaimsError("iss must be a string")
    aud = payload["aud"]
    if not is_audience(aud):  # a list is refused: exactly one audience
        raise ClaimsError("aud must be exactly one audience string")
    jti = payload["jti"]
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise ClaimsError("jti must be 128 bits of base64url")
    task = payload["task"]
    if not is_task(task):
        raise ClaimsError("task outside the grammar")
    raw_caps = payload["cap"]
    if not isinstance(raw_caps, list) or not 0 < len(raw_caps) <= MAX_CAPABILITIES:
        raise ClaimsError("cap must be a non-empty list")
    try:
        caps = tuple([Capability.from_json(c) for c in raw_caps])
    except InvalidRequest as e:
        raise ClaimsError(f"cap: {e.reason}") from None
    cnf_jkt = None
    if "cnf" in payload:
        cnf = payload["cnf"]
        if (
            not isinstance(cnf, dict)
            or set(cnf) != {"jkt"}
            or not isinstance(cnf["jkt"], str)
            or not _JKT.fullmatch(cnf["jkt"])
        ):
            raise ClaimsError("cnf must be {jkt: <thumbprint>}")
        cnf_jkt = cnf["jkt"]
    act = _actor(payload["act"]) if "act" in payload else None
    sub = _subject(payload["sub"], "sub")
    iat, nbf, exp = _int(payload, "iat"), _int(payload, "nbf"), _int(payload, "exp")
    # positional, in field order: the hot path builds one per token it has not seen
    return Claims(iss, sub, aud, iat, nbf, exp, jti, task, caps, cnf_jkt, act)
