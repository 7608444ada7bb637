"""Grammars for the names that appear in policy and tokens."""

from __future__ import annotations

import re
from typing import Final, TypeGuard

#: scope, agent and service names (README, "Writing a policy file")
NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: task ids (docs/tokens.md)
TASK: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: audiences: a service name or an https URL-like identifier, never with spaces
AUDIENCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


def is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def is_task(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and TASK.fullmatch(value) is not None


def is_audience(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and AUDIENCE.fullmatch(value) is not None


#: in a task reference, the owner that stands for every agent (an admin's revocation of a
#: task id for all agents); outside the agent-name grammar, so no agent can be called this
ANY_AGENT: Final = "*"


def task_ref(owner: str, task: str) -> str:
    """A task's identity: the agent at the root of its tokens' chain, and its id.

    Task ids are scoped to their agent (docs/api.md): two agents using the same id have two
    tasks. Agent names hold no ``/``, so ``owner/task`` names exactly one pair. ``owner``
    is an agent name or ``ANY_AGENT``.
    """
    return f"{owner}/{task}"
