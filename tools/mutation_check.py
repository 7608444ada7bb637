"""Break each core security check once and show that the suite goes red.

Each mutation replaces one line of the package, runs the test suite's fast part, and
restores the file. The run fails if any mutation leaves the suite green.

    python tools/mutation_check.py [--copy]

``--copy``: mutate a copy of the tracked files in a temporary directory (its ``broker``
first on the path of every test and every process a test starts), never the checkout, so
the check can run while other suites use the tree (``make suites`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    mutant: str
    tests: tuple[str, ...] = ("tests/unit", "tests/security")
    integration: bool = False  # the tests start real servers (redis, bao)


MUTATIONS = [
    Mutation("audience check deleted", "broker/token/verify.py", "    if claims.aud != audience:", "    if False:"),
    Mutation("typ check deleted", "broker/token/codec.py", "    if typ != TYP:", "    if False:"),
    Mutation("algorithm pin deleted", "broker/token/verify.py", "    if parsed.alg != key.alg:", "    if False:"),
    Mutation("'..' rule deleted", "broker/capability/resources.py", '    if ".." in resource:', "    if False:"),
    Mutation(
        "introspection ignores revocation",
        "broker/service/introspect.py",
        '    refusal = "revoked" if await is_revoked(broker, claims) else await _proven(broker, question, claims)',
        "    refusal = await _proven(broker, question, claims)",
        ("tests/service",),
    ),
    Mutation(
        "introspection audience filter deleted",
        "broker/service/own_tokens.py",
        "    if audiences is not None and claims.aud not in audiences:",
        "    if False:",
        ("tests/service",),
    ),
    Mutation(
        "mint rate limit deleted",
        "broker/service/mint.py",
        "claim_mint(agent.name, _rate(agent), request.task,",
        "claim_mint(agent.name, None, request.task,",
        ("tests/service",),
    ),
    Mutation(
        "task claim refusal ignored",
        "broker/service/mint.py",
        "    if claim is not TaskClaim.OWNED:",
        "    if False:",
        ("tests/service",),
    ),
    Mutation(
        "exchange: parent cover check deleted",
        "broker/delegation/exchange.py",
        "        covering = [c for c in held if covers(c, requested)]",
        "        covering = list(held)",
        ("tests/unit/test_exchange_decision.py", "tests/security/test_delegation_properties.py"),
    ),
    Mutation(
        "introspection ignores the DPoP key",
        "broker/service/introspect.py",
        '    return None if jkt == claims.cnf_jkt else "bad_proof"',
        "    return None",
        ("tests/service",),
    ),
    Mutation(
        "DPoP htm check deleted",
        "broker/dpop/proof.py",
        "    if not isinstance(htm, str) or htm != method:",
        "    if False:",
    ),
    Mutation(
        "identity JWT issuer check deleted",
        "broker/identity/jwt_identity.py",
        "    if claims.iss != issuer:",
        "    if False:",
    ),
    Mutation(
        "verifier cache skips revocation",
        "broker/verify/verifier.py",
        "        if claims.cnf_jkt is None:\n            self._check_revocation(claims, str(token), None)",
        "        if claims.cnf_jkt is None:\n            pass",
        ("tests/unit/test_verifier_cache.py", "tests/unit/test_verifier.py"),
    ),
    Mutation(
        "revocation cut-off boundary moved (a token issued at the cut-off survives)",
        "broker/token/revoked.py",
        "    return token or task or any(cutoff is not None and iat <= cutoff for cutoff in cutoffs)",
        "    return token or task or any(cutoff is not None and iat < cutoff for cutoff in cutoffs)",
    ),
    Mutation(
        "kill switch stops at the token's own agent (delegators ignored)",
        "broker/token/revoked.py",
        "    return (claims.agent, *claims.delegators)",
        "    return (claims.agent,)",
    ),
    Mutation(
        "session key signs though its endorsement left the published set",
        "broker/token/published.py",
        "        if key.kid not in published:",
        "        if False:",
    ),
    Mutation(
        "gateway forwards request headers the server appended after the checks (trailers)",
        "broker/gateway/app.py",
        '        scope = {**scope, "headers": tuple(scope.get("headers", ()))}',
        "        scope = dict(scope)",
        ("tests/gateway/test_header_snapshot.py",),
    ),
    Mutation(
        "revocation feed staleness unchecked",
        "broker/verify/revocation_feed.py",
        "        if self._monotonic() - self._state.confirmed_at > self._max_staleness:",
        "        if False:",
        ("tests/integration/test_revocation_feed.py",),
        integration=True,
    ),
    Mutation(
        "session key signs without Vault heard",
        "broker/backends/endorsed_signer.py",
        "        await self._vault.require(self._closed)\n        key = self._ready_key(claims.exp)",
        "        key = self._ready_key(claims.exp)",
        ("tests/integration/test_endorsed_signer.py",),
        integration=True,
    ),
    Mutation(
        "Vault role login-path check deleted",
        "broker/identity/vault_identity.py",
        '    if info.path != f"auth/{mount}/login":',
        "    if False:",
    ),
    Mutation(
        "seen token kept under a replaced key",
        "broker/token/seen.py",
        "        if current is key or current == key:",
        "        if True:",
        ("tests/unit/test_seen_tokens.py", "tests/service/test_seen_tokens.py"),
    ),
    Mutation(
        "batched mint claims share one rate key",
        "broker/backends/redis_state.py",
        "  if interval > 0 then wait = take_rate(KEYS[k + 1], interval, limit) end",
        "  if interval > 0 then wait = take_rate(KEYS[1], interval, limit) end",
        ("tests/integration/test_state_contract.py",),
        integration=True,
    ),
    Mutation(
        "a re-sealed append goes after newer events",
        "broker/backends/redis_rounds.py",
        "            self._events[:0] = [p for p in retry if p.attempts < AUDIT_ATTEMPTS]",
        "            self._events.extend(p for p in retry if p.attempts < AUDIT_ATTEMPTS)",
        ("tests/integration/test_state_contract.py",),
        integration=True,
    ),
    Mutation(
        "session key signs after a failed read of the published keys",
        "broker/backends/endorsed_signer.py",
        "        if view is None or self.error or tick - view.read_at >= MAX_STALE:",
        "        if view is None or tick - view.read_at >= MAX_STALE:",
        ("tests/integration/test_endorsed_signer.py",),
        integration=True,
    ),
    Mutation(
        "hot path drops no-store",
        "broker/http/hot_paths.py",
        "route.status, [_NO_STORE, ",
        "route.status, [",
        ("tests/service/test_hot_paths.py",),
    ),
    Mutation(
        "task ids not scoped to their agent",
        "broker/capability/names.py",
        '    return f"{owner}/{task}"',
        "    return task",
        ("tests/service/test_api.py",),
    ),
    Mutation(
        "kill switch does not suspend (memory)",
        "broker/backends/memory_state.py",
        "            if agent in self._suspended or (cutoff is not None and cutoff.value >= iat):",
        "            if cutoff is not None and cutoff.value >= iat:",
        ("tests/service/test_api.py",),
    ),
    Mutation(
        "kill switch does not suspend (Redis)",
        "broker/backends/redis_state.py",
        "    if redis.call('EXISTS', k[i]) == 1 then return 'suspended' end",
        "",
        ("tests/integration/test_state_contract.py",),
        integration=True,
    ),
    Mutation(
        "mint under a cut-off (born revoked)",
        "broker/backends/redis_state.py",
        "    if cutoff and cutoff >= iat then return 'suspended' end",
        "",
        ("tests/integration/test_state_contract.py",),
        integration=True,
    ),
    Mutation(
        "session key window not checked at verification",
        "broker/token/verify.py",
        "    if not key.signs_at(claims.iat, MAX_LEEWAY):",
        "    if False:",
    ),
    Mutation(
        "key withdrawals not applied by the verifier",
        "broker/verify/verifier.py",
        "        if withdrawn is not None:",
        "        if False:",
        ("tests/integration/test_endorsed_signer.py",),
        integration=True,
    ),
    Mutation(
        "revocations acknowledged without WAIT",
        "broker/backends/redis_state.py",
        "        if needed == 0:\n",
        "        if True:\n",
        ("tests/integration/test_sentinel_failover.py",),
        integration=True,
    ),
    Mutation(
        "pub/sub channels ignore the Redis DB",
        "broker/verify/redis_keys.py",
        '    return prefix if db == 0 else f"{prefix}db{db}:"',
        "    return prefix",
        ("tests/unit/test_redis_prefix.py",),
    ),
    Mutation(
        "a vanished session key is not withdrawn",
        "broker/backends/endorsed_signer.py",
        "        if gone:  # deleted,",
        "        if False:  # deleted,",
        ("tests/integration/test_endorsed_signer.py",),
        integration=True,
    ),
    Mutation(
        "DPoP replay cache per-key quota deleted",
        "broker/dpop/replay.py",
        "            if held >= self._max_per_key:",
        "            if False:",
        ("tests/unit/test_dpop_replay.py", "tests/security/test_dpop_attacks.py"),
    ),
    Mutation(
        "DPoP replay floor ignored",
        "broker/dpop/replay.py",
        "            if floor is not None and expires_at <= floor:",
        "            if False:",
        ("tests/unit/test_dpop_replay.py", "tests/security/test_dpop_attacks.py"),
    ),
    Mutation(
        "Redis eviction policy unchecked at start",
        "broker/backends/redis_durability.py",
        '    if found.maxmemory_policy != "noeviction":',
        "    if False:",
        ("tests/unit/test_redis_durability.py", "tests/integration/test_redis_durability.py"),
        integration=True,
    ),
    Mutation(
        "checkpoint signature check deleted",
        "broker/token/endorsement.py",
        '    if not verify_signature(signer.key, f"{header_b64}.{payload_b64}".encode("ascii"), signature):',
        "    if False:",
        ("tests/unit/test_audit_checkpoint.py",),
    ),
    Mutation(
        "checkpoint anchor not looked up",
        "broker/audit/chain.py",
        "        anchored = self._recent.get(checkpoint.head)",
        "        anchored = next(iter(self._recent.values()))",
        ("tests/unit/test_audit_checkpoint.py",),
    ),
    Mutation(
        "audit head not compared",
        "broker/audit/chain.py",
        "        if broken is None and not self._head_seen:",
        "        if False:",
        ("tests/unit/test_audit_checkpoint.py",),
    ),
    Mutation(
        "reasons quote caller text whole",
        "broker/errors.py",
        "    return repr(value) if len(value) <= limit else repr(value[:limit]) + _CUT",
        "    return repr(value)",
        ("tests/unit/test_audit_redaction.py",),
    ),
    Mutation(
        "redaction by the old backtracking regex",
        "broker/audit/redaction.py",
        "    return _RUN.sub(_redact_run, text)",
        '    return re.compile(r"eyJ[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*|cbk_[A-Za-z0-9_-]{8,}"'
        '\n                      r"|\\b(?:hvs|hvb|s|b)\\.[A-Za-z0-9]{20,}").sub(REDACTED, text)',
        ("tests/unit/test_audit_redaction.py",),
    ),
    Mutation(
        "refusals beyond the allowance stored",
        "broker/service/audit_recorder.py",
        "        if not keep:",
        "        if False:",
        ("tests/service/test_refusal_bounds.py",),
    ),
    Mutation(
        "a service's refusals spend no rate",
        "broker/service/refusals.py",
        "    if service is None or isinstance(error, BackendUnavailable):",
        "    if True:",
        ("tests/service/test_refusal_bounds.py",),
    ),
    Mutation(
        "a cut archive segment goes unnoticed",
        "broker/audit/segments.py",
        "    if last is None or count != header.count:",
        "    if last is None:",
        ("tests/unit/test_audit_archive.py",),
    ),
    Mutation(
        "audit archiver lease taken while held",
        "broker/backends/audit_archiver.py",
        "if holder then return 0 end",
        "if false then return 0 end",
        (
            (
                "tests/integration/test_audit_retention.py::"
                "test_two_archivers_only_the_lease_holder_writes_and_the_other_takes_over_where_it_stopped"
            ),
        ),
        integration=True,
    ),
    Mutation(
        "containment audience check deleted",
        "broker/service/contain.py",
        "    if claims.aud not in service.audiences:",
        "    if False:",
        ("tests/security/test_contain_attacks.py",),
    ),
    Mutation(
        "containment path task check deleted",
        "broker/service/contain.py",
        "    if claims.task != task:",
        "    if False:",
        ("tests/security/test_contain_attacks.py",),
    ),
    Mutation(
        "containment revokes the task id for every agent",
        "broker/service/contain.py",
        "revoke_task(claims.task, claims.root_agent,",
        "revoke_task(claims.task, None,",
        ("tests/security/test_contain_attacks.py",),
    ),
    Mutation(
        "gateway forwards the agent's credentials",
        "broker/gateway/headers.py",
        "    names = set(HOP_BY_HOP | AGENT_CREDENTIALS | _ALSO_DROPPED | OVERRIDES)",
        "    names = set(HOP_BY_HOP | _ALSO_DROPPED | OVERRIDES)",
        ("tests/gateway",),
    ),
    Mutation(
        "gateway lets pushes outside push_refs",
        "broker/gateway/pktline.py",
        '    return tuple(r for r in refs if not r.startswith(prefix) or ".." in r or r == prefix)',
        "    return ()",
        ("tests/gateway",),
    ),
    Mutation(
        "gateway maps non-canonical paths",
        "broker/gateway/mapping.py",
        "        return validate_resource(kind, resource)",
        "        return resource",
        ("tests/gateway",),
    ),
    Mutation(
        "gateway covers check deleted",
        "broker/gateway/app.py",
        "        if not grant.allows(target.kind, target.resource, target.action):",
        "        if False:",
        ("tests/integration/test_gateway_http.py",),
        integration=True,
    ),
    Mutation(
        "s3 list checked on its prefix, not its folder",
        "broker/gateway/s3ops.py",
        '    folder = prefix[: prefix.rfind("/") + 1]',
        "    folder = prefix",
        ("tests/gateway/test_s3ops.py::test_a_list_is_checked_on_the_folder_holding_every_key_its_prefix_can_match",),
    ),
    Mutation(
        "s3 key accepts an encoded slash",
        "broker/gateway/s3keys.py",
        "    if not separators and _ENCODED_SEPARATOR.search(raw):",
        "    if False:",
        ("tests/security/test_gateway_s3_attacks.py::test_an_encoded_slash_is_refused",),
    ),
    Mutation(
        "s3 copy source from another bucket",
        "broker/gateway/s3ops.py",
        "    if not slash or named != bucket:",
        "    if not slash:",
        ("tests/security/test_gateway_s3_attacks.py::test_a_copy_from_another_bucket_is_refused",),
    ),
    Mutation(
        "s3 DeleteObjects reads a DTD",
        "broker/gateway/s3delete.py",
        '    if b"<!" in body:',
        "    if False:",
        ("tests/security/test_gateway_s3_attacks.py::test_delete_objects_entity_to_a_foreign_key_is_refused",),
    ),
    Mutation(
        "bucket route covers check deleted",
        "broker/gateway/s3route.py",
        "            if not grant.allows(KIND, access.resource, access.action):",
        "            if False:",
        ("tests/integration/test_gateway_s3.py::test_refused_operations_reach_nothing",),
        integration=True,
    ),
    Mutation(
        "bucket route forwards a signed aws-chunked body undecoded",
        "broker/gateway/s3route.py",
        "        elif sent_hash in SIGNED_STREAMING:",
        "        elif False:",
        ("tests/integration/test_gateway_s3.py::test_a_signed_aws_chunked_upload_is_dechunked_and_stored_whole",),
        integration=True,
    ),
    Mutation(
        "cluster pipeline keeps a dead primary's slot map",
        "broker/verify/redis_options.py",
        "            self._remapped.map_is_stale()\n            raise",
        "            raise",
        ("tests/integration/test_redis_cluster_failover.py",),
        integration=True,
    ),
]


def run_suite(tests: tuple[str, ...], *, integration: bool = False) -> tuple[bool, str]:
    marker = ["-m", ""] if integration else ["-m", "not integration"]  # "": the ha suites too
    result = subprocess.run(  # noqa: S603 -- our own interpreter and test paths
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *marker, *tests],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this tree's broker, in tests and in the servers they start
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("FAILED") or " passed" in ln or " failed" in ln]
    if result.returncode == 5:  # pytest collected no tests
        raise SystemExit(f"no tests ran for {tests}: the mutation check proves nothing")
    return result.returncode == 0, "; ".join(lines[-2:])


def copy_of_checkout(into: Path) -> Path:
    """The tracked files of the checkout, copied under ``into``."""
    git = shutil.which("git") or "git"
    listed = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()  # noqa: S603
    for name in filter(None, listed.split("\0")):
        source, target = ROOT / name, into / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def main(argv: list[str] | None = None) -> int:
    global ROOT  # noqa: PLW0603 -- every mutation and test run works in the one tree chosen here
    if "--copy" in (sys.argv[1:] if argv is None else argv):
        with tempfile.TemporaryDirectory(prefix="capbroker-mutation-") as tmp:
            ROOT = copy_of_checkout(Path(tmp))
            return mutate_all()
    return mutate_all()


def mutate_all() -> int:
    survivors = 0
    for m in MUTATIONS:
        path = ROOT / m.file
        source = path.read_text()
        if source.count(m.original) != 1:
            print(f"mutation {m.name!r}: the line to mutate is not found exactly once in {m.file}")
            return 2
        path.write_text(source.replace(m.original, m.mutant))
        try:
            green, summary = run_suite(m.tests, integration=m.integration)
        finally:
            path.write_text(source)
        verdict = "SURVIVED (no test noticed)" if green else "killed"
        survivors += green
        print(f"{m.name:38} {verdict:28} {summary}")
    print(f"{len(MUTATIONS) - survivors} of {len(MUTATIONS)} mutations killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
