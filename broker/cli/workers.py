"""``workers: N``: N broker processes on one port, each a full broker.

The parent starts N children (``broker serve --as-worker``), each binding the port with
``SO_REUSEPORT`` so the kernel spreads connections across them, and forwards SIGHUP (every
child reloads its policy; a bad file is refused in each, the policy in force kept),
SIGTERM and SIGINT. A reload through the API in one child is announced to the others
through the state store. If a child dies, the parent stops the rest and exits non-zero:
the orchestrator restarts the whole unit rather than running short-handed silently.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

FORWARDED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too (the kernel balances them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say they are TCP; with proto 0 every small response waits for a delayed ACK (~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(config: str | None, workers: int) -> int:
    command = [sys.executable, "-m", "broker", "serve", "--as-worker"]
    if config is not None:
        command += ["--config", config]
    # A SIGHUP before a worker's app has installed its reload handler must not kill it:
    # ignored here, the disposition is inherited across exec until the app takes over.
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    children = [subprocess.Popen(command) for _ in range(workers)]  # noqa: S603 -- our own interpreter
    signal.signal(signal.SIGHUP, previous_hup)
    stopping = False  # asked to stop (SIGTERM/SIGINT): a clean exit
    failed = False  # a worker died on its own: the unit exits non-zero

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        while True:
            codes = [child.poll() for child in children]
            if all(code is not None for code in codes):
                return 1 if failed or not stopping else 0
            if not stopping and any(code is not None for code in codes):
                print("broker serve: a worker exited; stopping the others", file=sys.stderr)
                failed = True
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.poll() is None:
                child.kill()
