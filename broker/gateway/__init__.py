"""The gateway (docs/gateway.md): agents reach real upstreams with capability tokens and never
hold the upstream secret.

``config`` reads ``gateway.yaml``; ``mapping``, ``headers``, ``pktline`` are pure (what a
request asks for, which headers cross, which refs a push updates); ``secrets``,
``budgets``, ``verification``, ``containment`` are the adapters (Vault and files, Redis,
the broker); ``app`` is the ASGI service and ``server`` wires and runs it.
"""
