"""``broker policy check`` and ``broker policy explain``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from broker.errors import BrokerError, PolicyInvalid
from broker.policy import Allow, Policy, decide, load_policy, parse_mint_request
from broker.policy.lint import DEFAULT_MAX_AUDIENCES, lint


def register(commands: Any) -> None:
    policy = commands.add_parser("policy", help="validate and explain policy files")
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate and lint policy files; exit 1 with file:line errors")
    check.add_argument("directory", help="the policy directory (every *.yaml in it)")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument(
        "--max-audiences", type=int, default=DEFAULT_MAX_AUDIENCES, metavar="N",
        help=f"warn about an agent whose scopes reach more than N audiences (default {DEFAULT_MAX_AUDIENCES})",
    )  # fmt: skip
    add_output(check)
    check.set_defaults(run=run_check)

    explain = sub.add_parser("explain", help="would AGENT get SCOPE? the decision and why; exit 1 on deny")
    explain.add_argument("directory", help="the policy directory")
    explain.add_argument("--agent", required=True, help="the agent asking")
    explain.add_argument("--scope", required=True, help="the scope asked for")
    explain.add_argument("--resource", help="narrow the scope to this resource")
    explain.add_argument("--action", action="append", dest="actions", metavar="ACTION", help="narrow to this action")
    explain.add_argument("--ttl", help="the lifetime asked for (90s, 5m, 1h or seconds)")
    explain.add_argument("--task", default="explain", help="the task id (default: explain)")
    add_output(explain)
    explain.set_defaults(run=run_explain)


def add_output(parser: Any) -> None:
    parser.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="text for people (default) or one JSON object"
    )


def emit(args: argparse.Namespace, document: dict[str, Any]) -> None:
    """With ``-o json``: the command's result as one JSON object on stdout."""
    if args.output == "json":
        print(json.dumps(document, indent=2))


def _issue(issue: Any) -> dict[str, Any]:
    return {"file": issue.file, "line": issue.line, "severity": issue.severity, "message": issue.message}


def _load_or_report(args: argparse.Namespace) -> Policy | None:
    """The policy, or ``None`` after reporting every issue (``file:line: ...``)."""
    try:
        return load_policy(args.directory)
    except PolicyInvalid as e:
        if args.output == "json":
            emit(args, {"ok": False, "errors": [_issue(i) for i in e.issues], "warnings": []})
            return None
        for issue in e.issues:
            print(issue, file=sys.stderr)
        print(f"policy invalid: {len(e.issues)} error(s)", file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    policy = _load_or_report(args)
    if policy is None:
        return 1
    warnings = lint(policy, max_audiences=args.max_audiences)
    refused = bool(warnings) and args.strict
    if args.output == "json":
        emit(args, {
            "ok": not refused, "errors": [], "warnings": [_issue(w) for w in warnings], "digest": policy.digest,
            "scopes": len(policy.scopes), "agents": len(policy.agents), "services": len(policy.services),
            "files": list(policy.files),
        })  # fmt: skip
        return 1 if refused else 0
    for warning in warnings:
        print(warning, file=sys.stderr)
    if refused:
        print(f"policy refused under --strict: {len(warnings)} warning(s)", file=sys.stderr)
        return 1
    print(
        f"policy ok: {len(policy.scopes)} scopes, {len(policy.agents)} agents, {len(policy.services)} services "
        f"in {len(policy.files)} files; sha256 {policy.digest}"
    )
    return 0


def _deny(args: argparse.Namespace, code: str, reasons: list[str]) -> int:
    if args.output == "json":
        emit(args, {"decision": "deny", "code": code, "reasons": reasons, "capabilities": []})
    else:
        print(f"decision: deny ({code})")
        for reason in reasons:
            print(f"  - {reason}")
    return 1  # a finding, not a usage error


def run_explain(args: argparse.Namespace) -> int:
    policy = _load_or_report(args)
    if policy is None:
        return 1
    agent = policy.agents.get(args.agent)
    if agent is None:
        return _deny(args, "forbidden", [f"no agent {args.agent!r} in the policy"])
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
        return _deny(args, e.code, [e.reason])
    if isinstance(decision, Allow) and args.output == "json":
        capabilities = [
            {"audience": plan.audience, **cap.to_json()} for plan in decision.tokens for cap in plan.capabilities
        ]
        emit(args, {
            "decision": "allow", "code": "ok", "ttl": decision.ttl, "max_ttl": decision.max_ttl,
            "reasons": list(decision.reasons), "capabilities": capabilities,
        })  # fmt: skip
        return 0
    if isinstance(decision, Allow):
        print(f"decision: allow (ttl {decision.ttl}s, cap {decision.max_ttl}s)")
        for reason in decision.reasons:
            print(f"  - {reason}")
        for plan in decision.tokens:
            for cap in plan.capabilities:
                print(f"  token for {plan.audience}: {cap.kind} {cap.resource} {','.join(cap.actions)}")
        return 0
    return _deny(args, decision.code, list(decision.reasons or (decision.reason,)))
