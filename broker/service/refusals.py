"""Whose allowance a refusal counts against (``broker.audit.refusals``), and the rate a
service's refused requests spend.

An agent's refusals are stored up to its own ``rate:`` per window (or the default
allowance when it has none), a service's up to its ``rate:`` (a default applies when the
policy sets none); beyond that they are counted in one summary event per window. A
service's rate is spent only by its refused requests, exactly as a refused mint spends
the agent's: over it, the refusal is 429 ``rate_limited``. A successful introspection
spends nothing and costs no Redis round trip.
"""

from __future__ import annotations

import sys
from typing import Final

from broker.audit.refusals import DEFAULT_ALLOWANCE, Allowance
from broker.errors import BackendUnavailable, BrokerError, RateLimited
from broker.policy.model import Agent, Service
from broker.service.broker import Broker

#: Admins are trusted: their refusals (a policy that fails to load) are always stored.
ADMIN: Final = Allowance("admin", sys.maxsize, 60)


def of_agent(agent: Agent) -> Allowance:
    count, per = DEFAULT_ALLOWANCE if agent.rate is None else (agent.rate.count, agent.rate.per_seconds)
    return Allowance(f"agent:{agent.name}", count, per)


def of_service(service: Service) -> Allowance:
    return Allowance(f"service:{service.name}", service.rate.count, service.rate.per_seconds)


def of_principal(principal: Agent | Service | None) -> Allowance | None:
    if isinstance(principal, Agent):
        return of_agent(principal)
    return None if principal is None else of_service(principal)


async def spend_service_rate(broker: Broker, service: Service) -> None:
    """For a service's request that is refused anyway: spend its rate; over it, 429.
    The rate key is ``service:<name>``, which no agent name can spell (agent names have
    no ``:``), so an agent and a service of one name never share an allowance."""
    wait = await broker.state.take_rate(f"service:{service.name}", service.rate.count, service.rate.per_seconds)
    if wait > 0:
        raise RateLimited(f"service {service.name!r} is over its rate of {service.rate}", retry_after=wait)


async def refused_by_service(broker: Broker, service: Service | None, error: BrokerError) -> BrokerError:
    """What a (known) service's refused request answers: ``error``, after spending the
    service's rate; over it, 429 ``rate_limited`` instead. A backend failure spends nothing."""
    if service is None or isinstance(error, BackendUnavailable):
        return error
    try:
        await spend_service_rate(broker, service)
    except RateLimited as limited:
        return limited
    return error
