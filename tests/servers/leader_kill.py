"""Mint load while an OpenBao Raft cluster loses its leader: what each mint got, and when.

``kill_leader_under_load`` runs one closed-loop client per kind of mint (each a function
returning the HTTP status and body), SIGKILLs the active node after ``before`` seconds,
watches the others until one is active (the election), and keeps minting ``after``
seconds more. The ``Run`` it returns has every answer with its start and end times (from
the kill), and says per kind: the 503 window (first 503 to the end of the last one), the
slowest answer, and the tokens handed out. Used by ``tests/integration/test_bao_ha.py``
and ``bench/bao_leader_kill.py``; the test asserts generous bounds, the bench prints
figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.servers.bao_cluster import BaoCluster

Mint = Callable[[], tuple[int, Any]]


@dataclass(frozen=True)
class Answer:
    kind: str
    started: float  # seconds after the kill (negative: before it)
    ended: float
    status: int  # 0: no HTTP answer (the client's own timeout)
    code: str | None
    tokens: tuple[dict[str, Any], ...]
    credentials: tuple[dict[str, Any], ...] = ()

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Run:
    killed: str  # the node id killed
    elected_after: float  # seconds from the kill until another node was active
    answers: list[Answer] = field(default_factory=list)

    def of(self, kind: str) -> list[Answer]:
        return [a for a in self.answers if a.kind == kind]

    def window(self, kind: str) -> float:
        """From the start of the first 503 to the end of the last (0: none)."""
        refused = [a for a in self.of(kind) if a.status == 503]
        return max(a.ended for a in refused) - min(a.started for a in refused) if refused else 0.0

    def slowest(self, kind: str) -> float:
        return max(a.seconds for a in self.of(kind))

    def summary(self) -> str:
        lines = [f"killed {self.killed}; a new leader was active {self.elected_after:.2f} s later"]
        for kind in dict.fromkeys(a.kind for a in self.answers):
            answers = self.of(kind)
            lines.append(
                f"{kind}: {len(answers)} mints, {sum(a.status == 201 for a in answers)} tokens, "
                f"{sum(a.status == 503 for a in answers)} x 503, window {self.window(kind):.2f} s, "
                f"slowest {self.slowest(kind):.2f} s"
            )
        return "\n".join(lines)


def _client(
    kind: str, mint: Mint, *, zero: list[float], stop: threading.Event, out: list[Answer], pause: float
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            status, body = mint()
        except OSError:  # the client's own timeout: no answer at all
            status, body = 0, None
        ended = time.monotonic()
        code = body.get("code") if isinstance(body, dict) else None
        minted = body if status == 201 and isinstance(body, dict) else {}
        tokens, credentials = tuple(minted.get("tokens", ())), tuple(minted.get("credentials", ()))
        out.append(Answer(kind, started - zero[0], ended - zero[0], status, code, tokens, credentials))
        stop.wait(pause)


def kill_leader_under_load(
    cluster: BaoCluster, mints: Mapping[str, Mint], *, before: float = 2.0, after: float = 4.0, pause: float = 0.05
) -> Run:
    """Mint with every client, kill the leader ``before`` seconds in, and stop ``after``
    seconds past the election (module docstring)."""
    zero = [time.monotonic() + before]  # the kill's time, once known
    stop = threading.Event()
    answers: list[Answer] = []
    threads = [
        threading.Thread(
            target=_client,
            args=(kind, mint),
            kwargs={"zero": zero, "stop": stop, "out": answers, "pause": pause},
            daemon=True,
        )
        for kind, mint in mints.items()
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(before)
        leader = cluster.leader()
        zero[0] = time.monotonic()
        cluster.kill(leader)
        new = cluster.leader(timeout=60)
        elected = time.monotonic() - zero[0]
        assert new is not leader  # the killed node cannot be active
        time.sleep(after)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return Run(leader.node_id, elected, sorted(answers, key=lambda a: a.started))
