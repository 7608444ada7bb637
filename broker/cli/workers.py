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
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def port_in_use(host: str, port: int) -> str | None:
    """Why this instance must not start on ``host:port``, or None if the port is free.

    A plain bind (no ``SO_REUSEPORT``) fails while anything listens there, including
    another ``broker serve``'s workers, which would otherwise let this one's workers join
    their ``SO_REUSEPORT`` group and silently take half of the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket's TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as e:
            return (
                f"{host}:{port} is already in use ({e.strerror}): another `broker serve` or another"
                " program listens there; not starting a second instance on it"
            )
    return None


def hold_port(host: str, port: int) -> socket.socket:
    """A bound, never listening ``SO_REUSEPORT`` socket the supervisor keeps for its life:
    the port stays this instance's while its workers start and restart (a second instance's
    ``port_in_use`` sees it), and it receives no connection (it does not listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def supervise(config: str | None, workers: int) -> int:
    command = [sys.executable, "-m", "broker", "serve", "--as-worker"]
    if config is not None:
        command += ["--config", config]
    # one set of metrics for the unit: every worker writes its values to files here and
    # renders all of them (broker.service.metrics); fresh for each start, removed at exit
    try:
        metrics_dir = tempfile.mkdtemp(prefix="capbroker-metrics-")
    except OSError as e:
        print(
            f"broker serve: workers: {workers} needs a writable temporary directory for the workers' metrics"
            f" (TMPDIR, or a tmpfs / emptyDir at /tmp on a read-only root): {e.strerror}",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        return _run_workers(command, workers, env)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(command: list[str], workers: int, env: dict[str, str]) -> int:
    # A SIGHUP before a worker's app has installed its reload handler must not kill it:
    # ignored here, the disposition is inherited across exec until the app takes over.
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]  # noqa: S603 -- our own interpreter
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
