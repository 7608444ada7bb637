"""``broker token inspect``: show a token's header and claims; verify only when asked.
(``broker token get``, the agent's side, is ``broker.cli.agent_cmd``'s.)"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.cli.agent_cmd import register_token_get
from broker.errors import TokenRejected
from broker.token.b64 import Base64Error, b64url_decode
from broker.token.claims import ClaimsError, claims_from_json
from broker.token.codec import decode_payload, parse_compact
from broker.token.keys import KeyFormatError, KeySet, VerificationKey
from broker.token.strictjson import StrictJsonError, loads_object
from broker.token.verify import verify_token
from broker.verify.jwks import fetch_url


def register(commands: Any) -> None:
    token = commands.add_parser("token", help="look at tokens; get one for a task")
    sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    inspect = sub.add_parser("inspect", help="print a token's header, claims and times; exit 1 if rejected")
    inspect.add_argument("token", help="the token, or - to read it from standard input")
    keys = inspect.add_mutually_exclusive_group()
    keys.add_argument("--jwks", help="verify against this JWKS (URL or file)")
    keys.add_argument("--key", help="verify against this PEM public key (Ed25519 or P-256)")
    inspect.add_argument("--issuer", help="with --jwks: the expected issuer (default: the token's)")
    inspect.add_argument("--audience", help="with --jwks: the expected audience (default: the token's)")
    inspect.add_argument(
        "-o", "--output", choices=("text", "json"), default="text",
        help="text: the header and claims as JSON, times and the verdict on stderr (default); json: one object",
    )  # fmt: skip
    inspect.set_defaults(run=run_inspect)
    register_token_get(sub)


def _span(seconds: int) -> str:
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def times_of(payload: dict[str, Any], now: int) -> dict[str, str]:
    """``iat``, ``nbf`` and ``exp`` as UTC dates, with how far from ``now``."""
    out: dict[str, str] = {}
    for claim in ("iat", "nbf", "exp"):
        value = payload.get(claim)
        if type(value) is not int:
            continue
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
        if claim == "exp":
            when = f"expires in {_span(value - now)}" if value > now else f"expired {_span(now - value)} ago"
        else:
            when = f"{_span(now - value)} ago" if value <= now else f"in {_span(value - now)}"
        out[claim] = f"{date} ({when})"
    return out


def _report(args: argparse.Namespace, shown: dict[str, Any], verdict: str, line: str, code: int) -> int:
    if args.output == "json":
        print(json.dumps({**shown, "verdict": verdict, "detail": line}, indent=2))
    else:
        print(line, file=sys.stderr)
    return code


def _load_jwks(source: str) -> KeySet:
    raw = fetch_url(source) if source.startswith(("https://", "http://")) else Path(source).read_bytes()
    return KeySet.from_jwks(json.loads(raw))


def _load_pem(path: str, kid: str) -> KeySet:
    key = load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError("only Ed25519 and P-256 public keys are supported")
    return KeySet([VerificationKey(kid, key)])


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"{len(parts)} segments, not 3")
    return loads_object(b64url_decode(parts[0])), loads_object(b64url_decode(parts[1]))


def run_inspect(args: argparse.Namespace) -> int:
    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()  # noqa: S105
    try:
        header, payload = _unverified(token)
    except (ValueError, Base64Error, StrictJsonError) as e:
        print(f"not a capability token: {e}", file=sys.stderr)
        return 1
    now = int(time.time())
    shown = {"header": header, "claims": payload, "times": times_of(payload, now)}
    if args.output == "text":
        print(json.dumps({"header": header, "claims": payload}, indent=2, sort_keys=False))
        for claim, when in shown["times"].items():
            print(f"{claim}: {when}", file=sys.stderr)
    if args.jwks is None and args.key is None:
        try:
            claims_from_json(decode_payload(parse_compact(token)))
        except (TokenRejected, ClaimsError) as e:
            return _report(args, shown, "malformed", f"UNVERIFIED, and not well-formed: {e}", 1)
        return _report(
            args, shown, "unverified", "UNVERIFIED: signature not checked (give --jwks or --key to verify)", 0
        )
    try:
        keys = _load_jwks(args.jwks) if args.jwks else _load_pem(args.key, str(header.get("kid", "")))
    except (OSError, ValueError, KeyFormatError) as e:
        print(f"cannot load the key(s): {e}", file=sys.stderr)
        return 2
    issuer = args.issuer or str(payload.get("iss", ""))
    audience = args.audience or str(payload.get("aud", ""))
    try:
        verify_token(token, keys, issuer=issuer, audience=audience, now=now)
    except TokenRejected as e:
        return _report(args, shown, "rejected", f"REJECTED: {e.code}: {e.reason}", 1)
    line = f"VERIFIED: signature, claims and times valid (issuer {issuer}, audience {audience})"
    return _report(args, shown, "verified", line, 0)
