"""Adapters behind the service's ports: Vault/OpenBao Transit and local signers, Redis and
in-memory state. Import the module you need; this package imports nothing itself."""
