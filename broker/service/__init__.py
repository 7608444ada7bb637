"""The broker's use cases: mint, revoke, introspect, explain, reload. Pure of I/O
libraries; they talk to the backends only through the ports in ``ports.py``."""
