"""Bodies across the gateway, shared by its routes: the agent's request body towards the
upstream, and the upstream's answer back to the agent, each streamed chunk by chunk and
counted against the token's budget as it passes (nothing held whole).

A request body cut short (the agent went away) is never ended as if whole: ``AgentLeft``
is raised into the upstream write, which closes that connection without the last chunk.
An answer that fails after its head went out cannot be turned into a refusal any more:
``StreamAborted`` drops the agent's connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from broker.errors import BrokerError
from broker.gateway.audit import AuditLine
from broker.gateway.budgets import Meter
from broker.gateway.upstream import UpstreamResponse

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AgentLeft(Exception):
    """The agent went away (or its request broke) mid-body: the upstream connection is
    closed without ending the body, so a cut request is never taken as whole."""


class StreamAborted(Exception):
    """A response already started could not be finished; the connection is dropped."""


async def agent_body(
    receive: Receive, meter: Meter, prefix: Iterable[bytes] = (), *, more: bool = True
) -> AsyncIterator[bytes]:
    """The request body: ``prefix`` (chunks already read, for a check), then the rest as
    the agent sends it (none when ``more`` is false), each chunk counted inbound."""
    for chunk in prefix:
        await meter.count(len(chunk), inbound=True)
        yield chunk
    going = more
    while going:
        message = await receive()
        if message["type"] == "http.disconnect":  # never end a cut body as if whole
            raise AgentLeft
        chunk = bytes(message.get("body", b""))
        going = bool(message.get("more_body", False))
        if chunk:
            await meter.count(len(chunk), inbound=True)
            yield chunk


async def stream_back(
    send: Send,
    response: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    meter: Meter,
    line: AuditLine,
) -> None:
    """The upstream's answer to the agent with ``headers`` (already filtered), its body
    counted outbound; the upstream connection released either way."""
    try:
        line.status, line.decision = response.status, "allow"
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            async for chunk in response.body():
                await meter.count(len(chunk), inbound=False)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except BrokerError as e:
            line.code = e.code
            raise StreamAborted(type(e).__name__) from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        response.close()
