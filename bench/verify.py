"""The verifier library in one process on one core, next to pyjwt's decode of the same
tokens and the raw Ed25519 verify, with a live ``RevocationFeed`` on a real redis-server.

    .venv/bin/python -m bench.verify [--seconds 2]

Rows, each a closed loop on one core for ``--seconds`` (after a short warm-up), every call
timed on its own (so the timer's own ~0.1 us is included, for every row alike):

- pyjwt ``jwt.decode`` (EdDSA, ``PyJWK`` from our JWKS, audience, issuer, required
  claims): the baseline;
- cryptography's raw ``Ed25519PublicKey.verify`` of the same signing inputs, and
  libsodium's (PyNaCl ``crypto_sign_open``, what the verifier uses): the floors;
- ``Verifier.verify``, first sight: distinct tokens, each verified once;
- ``Verifier.verify``, seen before: 100 tokens in turn, as a gateway sees them;
- the same with a DPoP-bound token and a fresh proof on every call;
- the same seen-before loop with ``RedisRevocation`` (one MGET per call), for comparison.

Every ``Verifier`` row checks revocation against the live feed (a few thousand revocations
loaded, none of them these tokens'), except the last, which asks Redis each time.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as `python bench/verify.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign_open

from broker.backends.redis_state import RedisState
from broker.capability import Capability
from broker.dpop import DpopKey
from broker.token import LocalSigner, issue_claims, mint
from broker.token.b64 import b64url_decode
from broker.token.keys import KeySet
from broker.verify import RedisRevocation, RevocationFeed, Verifier
from tests.servers.processes import RedisServer, redis_binary

ISSUER = "https://broker.bench"
AUDIENCE = "storage-gateway"
CAP = Capability.build("bucket", "s3://acme-reports/agents/", ["read", "write"], "reports-write")
BASELINE = "pyjwt jwt.decode (EdDSA)"
URL = "https://storage.internal/reports/a.csv"
SEEN = 100  # tokens a gateway sees in turn
REVOKED = (3000, 300, 30)  # token ids, tasks and agents revoked before the run (none of ours)
TARGETS = {"first sight": 12_000, "seen before": 150_000}
T = TypeVar("T")


@dataclass
class Row:
    name: str
    calls: int
    seconds: float
    latencies_ns: list[int]
    target: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_us(self, p: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1000 if ordered else 0.0


def run(name: str, calls: Iterator[Callable[[], object]], seconds: float, warmup: float) -> Row:
    """Call each callable in turn, timed one by one, for ``seconds`` after ``warmup``
    (or until ``calls`` runs out)."""
    clock = time.perf_counter_ns
    end = clock() + int(warmup * 1e9)
    for call in calls:
        call()
        if clock() >= end:
            break
    latencies: list[int] = []
    record = latencies.append
    started = clock()
    end = started + int(seconds * 1e9)
    t1 = started
    for call in calls:
        t0 = clock()
        call()
        t1 = clock()
        record(t1 - t0)
        if t1 >= end:
            break
    return Row(name, len(latencies), (t1 - started) / 1e9, latencies)


class Tokens:
    """Tokens on the real clock (pyjwt checks times against it)."""

    def __init__(self, signer: LocalSigner) -> None:
        self.signer = signer
        self.now = int(time.time())

    def one(self, **kw: Any) -> str:
        base: dict[str, Any] = {
            "issuer": ISSUER,
            "agent": "analyst",
            "audience": AUDIENCE,
            "task": f"task-{secrets.token_hex(6)}",
            "capabilities": [CAP],
            "now": self.now,
            "ttl": 900,
        }
        base.update(kw)
        return mint(issue_claims(**base), self.signer)

    def many(self, count: int) -> list[str]:
        return [self.one() for _ in range(count)]


def each(items: Iterable[T], action: Callable[[T], object]) -> Iterator[Callable[[], object]]:
    for item in items:
        yield partial(action, item)


def cycle(tokens: list[str], action: Callable[[str], object]) -> Iterator[Callable[[], object]]:
    while True:
        yield from each(tokens, action)


def revoke_others(url: str) -> None:
    async def body() -> None:
        state = RedisState.from_url(url)
        try:
            now = int(time.time())
            for _ in range(REVOKED[0]):
                await state.revoke_token(secrets.token_urlsafe(16), now + 900)
            for n in range(REVOKED[1]):
                await state.revoke_task(f"revoked-task-{n}", None, now)
            for n in range(REVOKED[2]):
                await state.revoke_agent(f"revoked-agent-{n}", now)
        finally:
            await state.aclose()

    asyncio.run(body())


def machine(load: float, cpu: int) -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    redis = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return [
        f"machine: nproc={os.cpu_count()}, cpu={model}, {platform.system()} {platform.release()}",
        f"         1-min load average {load:.2f} at start (other work skews results); this process pinned to CPU {cpu}",
        (
            f"python:  {platform.python_implementation()} {platform.python_version()}, cryptography"
            f" {cryptography.__version__}, pyjwt {jwt.__version__}, {' '.join(redis.stdout.split()[:3])}"
        ),
    ]


def table(rows: list[Row]) -> list[str]:
    base = next(r.rate for r in rows if r.name == BASELINE)
    header = ("path", "tokens/s", "p50 us", "p99 us", "vs pyjwt", "target")
    cells = [
        (
            r.name,
            f"{r.rate:,.0f}",
            f"{r.percentile_us(50):.1f}",
            f"{r.percentile_us(99):.1f}",
            f"{r.rate / base:.2f}x" if base else "n/a",
            r.target,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ("-" if i in (0, 5) else ":") for i, w in enumerate(widths)) + "|"
    return [line(header), sep, *(line(c) for c in cells)]


def profile(v: Verifier, tokens: list[str]) -> list[str]:
    """cProfile of first sight: the functions that take the most time of their own."""
    profiler = cProfile.Profile()
    profiler.enable()
    for token in tokens:
        v.verify(token)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total = sum(tottime for _, _, tottime, _, _ in stats.stats.values())  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(12)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    header = (
        f"\nfirst sight, {len(tokens):,} tokens under cProfile ({total / len(tokens) * 1e6:.0f} us each, profiled):"
    )
    return [header, *(ln.replace(str(Path.cwd()) + "/", "") for ln in lines[start:])]


def target(row: Row, what: str) -> None:
    goal = TARGETS[what]
    row.target = f">= {goal:,}/s: {'met' if row.rate >= goal else f'missed ({row.rate / goal:.0%})'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window per row (default 2)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up before each window (default 0.3)")
    parser.add_argument("--profile", action="store_true", help="also print where first sight spends its time")
    args = parser.parse_args(argv)
    started, load = time.monotonic(), os.getloadavg()[0]
    cpus = sorted(os.sched_getaffinity(0))
    mine = cpus[-1]

    with tempfile.TemporaryDirectory(prefix="capbroker-bench-verify-") as tmp, ExitStack() as stack:
        redis = RedisServer(Path(tmp) / "redis").start()
        stack.callback(redis.stop)
        assert redis.proc is not None  # noqa: S101 -- started just above
        if len(cpus) > 1:  # the server on another core than the verifier, as on a real host
            os.sched_setaffinity(redis.proc.pid, set(cpus[:-1]))
        os.sched_setaffinity(0, {mine})  # this thread, and the feed's thread it starts: one core
        revoke_others(redis.url)

        signer = LocalSigner.generate("EdDSA", kid="bench-1")
        jwks = KeySet([signer.public]).to_jwks()
        feed = RevocationFeed(redis.url, prefix="capbroker:")
        stack.callback(feed.close)
        if not feed.wait_ready(5.0):
            print(f"the revocation feed did not come up: {feed.last_error}", file=sys.stderr)
            return 1
        per_call = RedisRevocation(redis.url, prefix="capbroker:")
        stack.callback(per_call.close)

        def verifier(**kw: Any) -> Verifier:
            return Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, **kw)

        print(*machine(load, mine), sep="\n")
        print(f"revocation feed: {len(feed):,} revocations loaded (none of the tokens measured)")
        print("  minting tokens ...", file=sys.stderr, flush=True)
        tokens = Tokens(signer)
        budget = int(args.seconds * 25_000) + int(args.warmup * 25_000)  # more than any row can use
        fresh = {row: tokens.many(budget) for row in ("pyjwt", "raw", "sodium", "first")}
        seen = tokens.many(SEEN)
        dpop_key = DpopKey.generate("EdDSA")
        bound = tokens.one(cnf_jkt=dpop_key.jkt)
        proofs = [dpop_key.proof("GET", URL, now=tokens.now, access_token=bound) for _ in range(budget // 2)]
        print(flush=True)

        pyjwk = jwt.PyJWK(jwks["keys"][0])
        required: Any = {"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]}

        def pyjwt_decode(token: str) -> object:
            return jwt.decode(token, pyjwk, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER, options=required)

        public = signer.public.key
        assert isinstance(public, ed25519.Ed25519PublicKey)  # noqa: S101 -- generated as EdDSA above

        def raw_verify(split: tuple[bytes, bytes]) -> None:
            public.verify(split[1], split[0])

        raw_public = public.public_bytes(Encoding.Raw, PublicFormat.Raw)

        def sodium_verify(split: tuple[bytes, bytes]) -> None:
            crypto_sign_open(split[1] + split[0], raw_public)

        def bound_verify(proof: str) -> object:
            return with_proof.verify(bound, dpop=proof, method="GET", url=URL)

        split, sodium_split = (
            [(t.rsplit(".", 1)[0].encode(), b64url_decode(t.rsplit(".", 1)[1])) for t in fresh[row]]
            for row in ("raw", "sodium")
        )

        first_sight = verifier(revocation=feed)
        seen_before = verifier(revocation=feed)
        for token in seen:
            seen_before.verify(token)
        with_proof = verifier(revocation=feed)
        proof_calls = iter(proofs)
        with_proof.verify(bound, dpop=next(proof_calls), method="GET", url=URL)
        mget = verifier(revocation=per_call)
        for token in seen:
            mget.verify(token)

        plan: list[tuple[str, Iterator[Callable[[], object]], str]] = [
            (BASELINE, each(fresh["pyjwt"], pyjwt_decode), ""),
            ("raw Ed25519 verify (cryptography)", each(split, raw_verify), ""),
            ("raw Ed25519 verify (libsodium)", each(sodium_split, sodium_verify), ""),
            ("Verifier.verify, first sight", each(fresh["first"], first_sight.verify), "first sight"),
            ("Verifier.verify, seen before", cycle(seen, seen_before.verify), "seen before"),
            ("Verifier.verify, seen before, DPoP proof", each(proof_calls, bound_verify), ""),
            ("Verifier.verify, seen before, RedisRevocation", cycle(seen, mget.verify), ""),
        ]
        rows: list[Row] = []
        for name, calls, goal in plan:
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)
            row = run(name, calls, args.seconds, args.warmup)
            if goal:
                target(row, goal)
            rows.append(row)
        if not feed.ready:
            print("the revocation feed went down during the run: the Verifier rows are not valid", file=sys.stderr)
            return 1

        print(*table(rows), sep="\n")
        if args.profile:
            print(*profile(verifier(revocation=feed), tokens.many(5000)), sep="\n")
        print(f"\ntotal run time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
