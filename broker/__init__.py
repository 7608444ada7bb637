"""capbroker: capability-scoped credentials for AI agents.

Public surface: ``broker.verify`` (for services that check tokens), ``broker.policy``
(policy files and decisions), ``broker.token`` (the token format), ``broker.errors``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
