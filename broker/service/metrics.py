"""The broker's Prometheus metrics, on ``prometheus_client`` (no hand-written renderer).

- One process: each ``Metrics`` has its own registry (a test may build many brokers).
- ``workers: N``: the supervisor gives its workers ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
  directory it owns, ``broker.cli.workers``); every worker's values go to files there, and
  ``/metrics`` in any worker renders all of them (``MultiProcessCollector``), so each
  scrape sees the whole unit, not the one worker the connection reached.
- Backend latency (Vault and Redis round trips) is per process, not per broker:
  ``observe_vault`` / ``observe_redis``, called by the adapters.
- The signing session key's end (``capbroker_session_key_signing_ends_timestamp_seconds``):
  a timestamp, not a countdown, so that a value written by another worker stays true; the
  remaining time is ``that - time()`` in a query.
"""

from __future__ import annotations

import os
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series: they double the output and nobody reads them

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BACKEND_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: name -> (help, label names, sorted)
_COUNTERS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "capbroker_tokens_minted_total": ("Capability tokens signed and handed out.", ()),
    "capbroker_tokens_exchanged_total": ("Delegated capability tokens issued by token exchange.", ()),
    "capbroker_decisions_total": ("Mint decisions by result and code.", ("code", "decision")),
    "capbroker_revocations_total": ("Revocations by kind (token, task, agent, contained).", ("kind",)),
    "capbroker_introspections_total": ("Introspection answers by result.", ("result",)),
    "capbroker_backend_errors_total": ("Requests refused with 503 because a backend failed.", ()),
    "capbroker_policy_reloads_total": ("Policy reloads by result.", ("result",)),
    "capbroker_http_requests_total": ("HTTP responses by status class.", ("status",)),
    "capbroker_audit_checkpoints_total": ("Signed audit checkpoints by result (written, failed).", ("result",)),
}

_BACKENDS: Final = CollectorRegistry(auto_describe=False)
_VAULT_LATENCY: Final = Histogram(
    "capbroker_vault_request_duration_seconds",
    "Vault calls (sign, key reads, token lookups and renewal), successful or not.",
    buckets=_BACKEND_BUCKETS,
    registry=_BACKENDS,
)
_REDIS_LATENCY: Final = Histogram(
    "capbroker_redis_round_duration_seconds",
    "Redis round trips of the shared mint/audit pipeline, successful or not.",
    buckets=_BACKEND_BUCKETS,
    registry=_BACKENDS,
)
_SESSION_KEY_ENDS: Final = Gauge(
    "capbroker_session_key_signing_ends_timestamp_seconds",
    "When the session key that signs now stops signing (Unix time; the soonest across workers).",
    registry=_BACKENDS,
    multiprocess_mode="livemin",
)


def observe_vault(seconds: float) -> None:
    _VAULT_LATENCY.observe(seconds)


def observe_redis(seconds: float) -> None:
    _REDIS_LATENCY.observe(seconds)


def session_key_signs_until(timestamp: float) -> None:
    _SESSION_KEY_ENDS.set(timestamp)


class Metrics:
    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._counters = {
            name: Counter(name, help_text, labels, registry=self._registry)
            for name, (help_text, labels) in _COUNTERS.items()
        }
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._latency = Histogram(
            "capbroker_http_request_duration_seconds",
            "HTTP request latency.",
            buckets=_BUCKETS,
            registry=self._registry,
        )

    def inc(self, name: str, value: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        child = self._children.get(key)
        if child is None:
            counter = self._counters.get(name)
            if counter is None:
                raise ValueError(f"unknown metric {name!r}")
            child = counter.labels(**labels) if labels else counter
            self._children[key] = child
        child.inc(value)

    def observe_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def value(self, name: str, **labels: str) -> int:
        """This process's count (tests; the endpoint renders every worker's)."""
        return int(self._registry.get_sample_value(name, labels) or 0)

    def render(self) -> str:
        directory = os.environ.get(MULTIPROCESS_ENV)
        if directory:  # one of several workers: every worker's files, this one's included
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry).decode()
        return (generate_latest(self._registry) + generate_latest(_BACKENDS)).decode()
