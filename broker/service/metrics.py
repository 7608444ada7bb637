"""A few counters and a latency histogram, rendered in the Prometheus text format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_HELP = {
    "capbroker_tokens_minted_total": "Capability tokens signed and handed out.",
    "capbroker_tokens_exchanged_total": "Delegated capability tokens issued by token exchange.",
    "capbroker_decisions_total": "Mint decisions by result and code.",
    "capbroker_revocations_total": "Revocations by kind (token, task, agent, contained).",
    "capbroker_introspections_total": "Introspection answers by result.",
    "capbroker_backend_errors_total": "Requests refused with 503 because a backend failed.",
    "capbroker_policy_reloads_total": "Policy reloads by result.",
    "capbroker_http_requests_total": "HTTP responses by status class.",
    "capbroker_audit_checkpoints_total": "Signed audit checkpoints by result (written, failed).",
}


class Metrics:
    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._latency = [0] * (len(_BUCKETS) + 1)
        self._latency_sum = 0.0

    def inc(self, name: str, value: int = 1, **labels: str) -> None:
        if name not in _HELP:
            raise ValueError(f"unknown metric {name!r}")
        self._counters[(name, tuple(sorted(labels.items())))] += value

    def observe_latency(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(_BUCKETS) if seconds <= bound), len(_BUCKETS))
        self._latency[index] += 1
        self._latency_sum += seconds

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text in _HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            rows = sorted((labels, v) for (n, labels), v in self._counters.items() if n == name)
            lines += [f"{name}{_labels(labels)} {v}" for labels, v in rows]
        name = "capbroker_http_request_duration_seconds"
        lines += [f"# HELP {name} HTTP request latency.", f"# TYPE {name} histogram"]
        total = 0
        for bound, count in zip((*map(str, _BUCKETS), "+Inf"), self._latency, strict=True):
            total += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {total}')
        lines += [f"{name}_sum {self._latency_sum:.6f}", f"{name}_count {total}"]
        return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{{{inner}}}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
