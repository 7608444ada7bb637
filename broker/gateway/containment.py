"""Containment: the first request a valid token does not allow revokes its task (docs/gateway.md).

``contain_request`` (pure) builds the broker call ``POST {issuer}/v1/tasks/{task}/contain``
with the gateway's service key and the agent's token as evidence; ``Containment`` sends
it once per task from this replica, and from then on this replica refuses the task's
requests itself (``contained``): the revocation reaches its verifier within a second, but
the request right after the misstep must not get through in that second. Any answer but
200, or none, is logged by its status or exception
type only (never the key or the token) and the agent still gets its 403.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

TIMEOUT: Final = 2.0
REMEMBERED_TASKS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ContainRequest:
    url: str
    headers: dict[str, str]
    body: bytes


def contain_request(
    issuer: str, service_key: str, *, token: str, task: str, kind: str, resource: str, action: str, request_id: str
) -> ContainRequest:
    body = json.dumps(
        {"token": token, "kind": kind, "resource": resource, "action": action, "request_id": request_id},
        separators=(",", ":"),
    ).encode()
    return ContainRequest(
        url=f"{issuer.rstrip('/')}/v1/tasks/{quote(task, safe='')}/contain",
        headers={
            "Authorization": f"Bearer {service_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
        body=body,
    )


class Containment:
    def __init__(self, issuer: str, service_key: str, client: httpx.AsyncClient) -> None:
        self._issuer, self._key, self._client = issuer, service_key, client
        self._done: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"Containment({self._issuer!r})"  # never the key

    def contained(self, task_ref: str) -> bool:
        """True once this replica contained the task (the broker answered 200)."""
        return task_ref in self._done

    async def contain(
        self, *, token: str, task_ref: str, task: str, kind: str, resource: str, action: str, request_id: str
    ) -> str:
        """Report the request; the outcome for the audit line: contained, already, or failed:<why>."""
        if task_ref in self._done:
            return "already"
        request = contain_request(
            self._issuer,
            self._key,
            token=token,
            task=task,
            kind=kind,
            resource=resource,
            action=action,
            request_id=request_id,
        )
        try:
            answer = await self._client.post(
                request.url, content=request.body, headers=request.headers, timeout=TIMEOUT
            )
        except httpx.HTTPError as e:
            log.warning("gateway: containment of task %s failed: %s", task_ref, type(e).__name__)
            return f"failed:{type(e).__name__}"
        if answer.status_code != 200:
            log.warning("gateway: containment of task %s answered %s", task_ref, answer.status_code)
            return f"failed:{answer.status_code}"
        self._done[task_ref] = None
        if len(self._done) > REMEMBERED_TASKS:
            self._done.popitem(last=False)
        return "contained"
