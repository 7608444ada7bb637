"""Prometheus text counters for ``/metrics``: requests by kind, decision and status."""

from __future__ import annotations

from collections import Counter

from broker.gateway.audit import AuditLine


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.upstream_seconds = 0.0
        self.bytes = Counter[str]()

    def record(self, line: AuditLine, upstream_s: float) -> None:
        self.requests[(line.kind or "none", line.decision, line.status)] += 1
        self.bytes["in"] += line.bytes_in
        self.bytes["out"] += line.bytes_out
        self.upstream_seconds += upstream_s

    def render(self) -> str:
        lines = [
            "# HELP capbroker_gateway_requests_total Requests by kind, decision and status.",
            "# TYPE capbroker_gateway_requests_total counter",
        ]
        for (kind, decision, status), n in sorted(self.requests.items()):
            lines.append(
                f'capbroker_gateway_requests_total{{kind="{kind}",decision="{decision}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP capbroker_gateway_body_bytes_total Body bytes forwarded, by direction.",
            "# TYPE capbroker_gateway_body_bytes_total counter",
            f'capbroker_gateway_body_bytes_total{{direction="in"}} {self.bytes["in"]}',
            f'capbroker_gateway_body_bytes_total{{direction="out"}} {self.bytes["out"]}',
            "# HELP capbroker_gateway_upstream_seconds_total Time spent waiting for upstreams.",
            "# TYPE capbroker_gateway_upstream_seconds_total counter",
            f"capbroker_gateway_upstream_seconds_total {self.upstream_seconds:.6f}",
        ]
        return "\n".join(lines) + "\n"
