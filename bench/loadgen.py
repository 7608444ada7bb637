"""A small closed-loop HTTP load generator, run in its own process by ``bench.mint``.

``connections`` asyncio workers each hold one keep-alive connection and POST back to back
for ``warmup + seconds``. Only requests that complete inside the measured window (after
the warm-up) count: requests/s is those completions over the window, p50/p99 are over
their latencies, and a request counts as an error when it raised or its status was not
the expected one.

With ``client="wrk"`` the load comes from wrk (Debian's package, C, one thread, the same
connection count): a warm-up run, then the measured run, each a fresh ``wrk`` process. wrk
counts a status of 400 or more, and any socket error or timeout, as an error; its p50/p99
are over every completed request. It costs far less CPU than an asyncio client, so on a
machine shared with the servers it takes less of their CPU (the CPU line says how much).

This module imports nothing from the broker or the test harness, so the load process
stays small. ``auto`` is wrk when installed, else aiohttp when installed
(``bench/requirements.txt``), else httpx.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Send = Callable[[bytes], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True)
class LoadSpec:
    url: str
    headers: dict[str, str]
    expect: int
    body: str  # a fixed JSON body, or one with {n} replaced by a request number unique in the run
    connections: int = 64
    seconds: float = 10.0
    warmup: float = 2.0
    client: str = "auto"  # auto | wrk | aiohttp | httpx
    method: str = "POST"  # GET sends no body
    cycle: int = 0  # > 0: a body's {c} is the request number modulo this (a bounded set of ids)


@dataclass
class LoadResult:
    client: str
    ok: int = 0
    errors: int = 0
    window: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    cpu_seconds: float = 0.0
    first_error: str = ""
    # wrk reports its own percentiles (ms) instead of every latency
    reported: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.ok / self.window if self.window else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the successful requests' latencies, in ms."""
        if f"p{p:g}" in self.reported:
            return self.reported[f"p{p:g}"]
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]


def pick_client(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if shutil.which("wrk") is not None:
        return "wrk"
    return "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"


def run_load(spec: LoadSpec, on_window: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run one measurement, return it as a picklable dict. ``on_window`` is told "start" and
    "end" at the edges of the measured window."""
    if pick_client(spec.client) == "wrk":
        return asdict(_run_wrk(spec, on_window))
    result = asyncio.run(_run(spec, on_window))
    return asdict(result)


def load_process(spec: LoadSpec, conn: Connection) -> None:
    """Entry point of the load process: Ctrl-C is the parent's to handle (it ends this process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(("result", run_load(spec, lambda edge: conn.send((edge, None)))))
    finally:
        conn.close()


async def _run(spec: LoadSpec, on_window: Callable[[str], None]) -> LoadResult:
    client = pick_client(spec.client)
    if client == "aiohttp":
        import aiohttp  # noqa: PLC0415 - optional, bench-only dependency

        connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=spec.connections)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, headers=spec.headers, timeout=timeout) as session:

            async def send(body: bytes) -> tuple[int, bytes]:
                data = body if spec.method != "GET" else None
                async with session.request(spec.method, spec.url, data=data) as r:
                    return r.status, await r.read()

            return await _drive(spec, send, client, on_window)
    if client == "httpx":
        import httpx  # noqa: PLC0415

        limits = httpx.Limits(max_connections=spec.connections, max_keepalive_connections=spec.connections)
        async with httpx.AsyncClient(limits=limits, headers=spec.headers, timeout=30) as http:

            async def send_httpx(body: bytes) -> tuple[int, bytes]:
                r = await http.request(spec.method, spec.url, content=body if spec.method != "GET" else None)
                return r.status_code, r.content

            return await _drive(spec, send_httpx, client, on_window)
    raise ValueError(f"unknown client {client!r}")


async def _drive(spec: LoadSpec, send: Send, client: str, on_window: Callable[[str], None]) -> LoadResult:
    result = LoadResult(client=client)
    state = {"measuring": False, "stop": False}
    counter = iter(range(1 << 62))
    templated = "{n}" in spec.body or "{c}" in spec.body

    def body_of(n: int) -> bytes:
        text = spec.body.replace("{n}", str(n))
        return (text.replace("{c}", str(n % spec.cycle)) if spec.cycle > 0 else text).encode()

    async def worker() -> None:
        while not state["stop"]:
            body = body_of(next(counter)) if templated else spec.body.encode()
            start = time.perf_counter()
            try:
                status, raw = await send(body)
            except Exception as e:  # noqa: BLE001 - any failure of one request is one error
                status, raw = -1, f"{type(e).__name__}: {e}".encode()
            elapsed = time.perf_counter() - start
            if not state["measuring"]:
                continue
            if status == spec.expect:
                result.ok += 1
                result.latencies_ms.append(elapsed * 1000)
            else:
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"{status} {raw[:300]!r}"

    workers = [asyncio.create_task(worker()) for _ in range(spec.connections)]
    await asyncio.sleep(spec.warmup)
    state["measuring"] = True
    on_window("start")
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(spec.seconds)
    state["measuring"] = False
    on_window("end")
    result.window = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - cpu0
    state["stop"] = True
    await asyncio.gather(*workers)
    return result


# One wrk thread; each request gets the next number of this run in its body's {n}, and
# that number modulo ``cycle`` in its {c}.
_WRK_SCRIPT = """
local method, path, body, headers, phase, cycle = %s, %s, %s, {%s}, %s, %d
local n = 0
local templated = string.find(body, "{n}", 1, true) ~= nil
request = function()
  n = n + 1
  local b = body
  if templated then b = string.gsub(body, "{n}", phase .. "-" .. n) end
  if cycle > 0 then b = string.gsub(b, "{c}", tostring(n %% cycle)) end
  if method == "GET" then b = nil end
  return wrk.format(method, path, headers, b)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nCAPBROKER {"requests": %%d, "micros": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d,'
    .. ' "timeout": %%d, "p50": %%d, "p99": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this ASCII


def _wrk_once(spec: LoadSpec, seconds: float, phase: str, work: Path) -> dict[str, Any]:
    parts = urlsplit(spec.url)
    headers = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in spec.headers.items())
    script = work / f"{phase}.lua"
    script.write_text(
        _WRK_SCRIPT % (_lua(spec.method), _lua(parts.path), _lua(spec.body), headers, _lua(phase), spec.cycle)
    )
    argv = ["wrk", "-t1", f"-c{spec.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
            "-s", str(script), f"{parts.scheme}://{parts.netloc}"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603
    for line in out.stdout.splitlines():
        if line.startswith("CAPBROKER "):
            found: dict[str, Any] = json.loads(line.removeprefix("CAPBROKER "))
            return found
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr[-500:] or out.stdout[-500:]}")


def _run_wrk(spec: LoadSpec, on_window: Callable[[str], None]) -> LoadResult:
    result = LoadResult(client="wrk")
    with tempfile.TemporaryDirectory(prefix="capbroker-wrk-") as tmp:
        if spec.warmup > 0:
            _wrk_once(spec, spec.warmup, "w", Path(tmp))
        on_window("start")
        cpu0 = _children_cpu()
        got = _wrk_once(spec, spec.seconds, "m", Path(tmp))
        result.cpu_seconds = _children_cpu() - cpu0
        on_window("end")
    result.window = got["micros"] / 1e6
    result.errors = sum(got[k] for k in ("connect", "read", "write", "status", "timeout"))
    result.ok = got["requests"] - got["status"]  # socket errors and timeouts never completed
    result.reported = {"p50": got["p50"] / 1000, "p99": got["p99"] / 1000}
    if result.errors:
        result.first_error = ", ".join(f"{k} {got[k]}" for k in ("connect", "read", "write", "status", "timeout"))
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
