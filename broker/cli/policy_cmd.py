"""``broker policy check`` and ``broker policy explain``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from broker.errors import BrokerError, PolicyInvalid
from broker.policy import Allow, Policy, decide, load_policy, parse_mint_request
from broker.policy.lint import DEFAULT_MAX_AUDIENCES, lint


def register(commands: Any) -> None:
    policy = commands.add_parser("policy", help="validate and explain policy files")
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate and lint policy files; exit 1 with file:line errors")
    check.add_argument("directory")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument("--max-audiences", type=int, default=DEFAULT_MAX_AUDIENCES, metavar="N")
    check.set_defaults(run=run_check)

    explain = sub.add_parser("explain", help="would AGENT get SCOPE? the decision and why")
    explain.add_argument("directory")
    explain.add_argument("--agent", required=True)
    explain.add_argument("--scope", required=True)
    explain.add_argument("--resource")
    explain.add_argument("--action", action="append", dest="actions", metavar="ACTION")
    explain.add_argument("--ttl")
    explain.add_argument("--task", default="explain")
    explain.set_defaults(run=run_explain)


def _load_or_report(directory: str) -> Policy | None:
    """The policy, or ``None`` after printing every issue as ``file:line: ...``."""
    try:
        return load_policy(directory)
    except PolicyInvalid as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        print(f"policy invalid: {len(e.issues)} error(s)", file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    policy = _load_or_report(args.directory)
    if policy is None:
        return 1
    warnings = lint(policy, max_audiences=args.max_audiences)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if warnings and args.strict:
        print(f"policy refused under --strict: {len(warnings)} warning(s)", file=sys.stderr)
        return 1
    print(
        f"policy ok: {len(policy.scopes)} scopes, {len(policy.agents)} agents, {len(policy.services)} services "
        f"in {len(policy.files)} files; sha256 {policy.digest}"
    )
    return 0


def run_explain(args: argparse.Namespace) -> int:
    policy = _load_or_report(args.directory)
    if policy is None:
        return 1
    agent = policy.agents.get(args.agent)
    if agent is None:
        print(f"decision: deny (forbidden)\n  - no agent {args.agent!r} in the policy")
        return 2
    entry: dict[str, Any] = {"scope": args.scope}
    if args.resource is not None:
        entry["resource"] = args.resource
    if args.actions:
        entry["actions"] = args.actions
    body: dict[str, Any] = {"task": args.task, "scopes": [entry]}
    if args.ttl is not None:
        body["ttl"] = int(args.ttl) if args.ttl.isdigit() else args.ttl
    try:
        decision = decide(agent, parse_mint_request(body), policy)
    except BrokerError as e:
        print(f"decision: deny ({e.code})\n  - {e.reason}")
        return 2
    if isinstance(decision, Allow):
        print(f"decision: allow (ttl {decision.ttl}s, cap {decision.max_ttl}s)")
        for reason in decision.reasons:
            print(f"  - {reason}")
        for plan in decision.tokens:
            for cap in plan.capabilities:
                print(f"  token for {plan.audience}: {cap.kind} {cap.resource} {','.join(cap.actions)}")
        return 0
    print(f"decision: deny ({decision.code})")
    for reason in decision.reasons or (decision.reason,):
        print(f"  - {reason}")
    return 2
