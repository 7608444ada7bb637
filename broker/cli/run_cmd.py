"""``broker run``: mint a task's tokens, run a command with them, keep them fresh.

    CAPBROKER_KEY=cbk_... broker run --broker URL --task T --scope widgets-read \\
        --gateway http://127.0.0.1:8800 [--revoke-on-exit] -- git clone https://github.com/acme/widgets

What the command gets is ``broker.client.run_env``'s: git configuration through
``GIT_CONFIG_*`` (the gateway URL rewrite, and an included private file with the bearer
header) and ``CAPBROKER_*`` variables and token files for the other kinds; with a bucket
scope, ``broker.client.aws_env``'s private AWS config (the gateway's ``/s3`` endpoint,
path style, a ``credential_process`` reading a token answer file) and no inherited AWS
credential, profile or endpoint variable. The tokens are
minted again before they expire (``broker.client.freshness``) and the files replaced,
for as long as the command runs. The exit status is the command's (128 + N when a signal
N ended it); SIGINT and SIGTERM are passed on to it. The agent's credential
(``CAPBROKER_KEY``) is not passed on: the command holds only its tokens. With ``--revoke-on-exit`` the task
is revoked when the command ends, whatever its status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from broker.cli.agent_args import KEY_ENV, UsageError, add_broker_args, client_of, report_failure, ttl_of
from broker.client import BrokerCallFailed, BrokerClient, IssuedToken
from broker.client.aws_env import (
    AWS_ANSWER,
    AWS_CONFIG,
    AWS_CREDENTIALS,
    aws_env,
    bucket_token,
    config_text,
    credential_json,
    region_of,
    without_aws,
)
from broker.client.calls import scope_entry
from broker.client.freshness import refresh_at
from broker.client.run_env import GIT_INCLUDE, Split, git_env, git_include_text, http_env, split, token_file_name

RETRY_AFTER_FAILURE = 5.0  # seconds before minting again after a failed refresh


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="run a command with a task's capability tokens in its environment")
    add_broker_args(run, scope_many=True)
    run.add_argument(
        "--gateway", help="the gateway's base URL (git traffic, the AWS SDK's S3 endpoint and CAPBROKER_GATEWAY)"
    )
    run.add_argument("--resource", help="narrow the (one) scope to this resource, e.g. s3://BUCKET/PREFIX/")
    run.add_argument("--action", help="narrow the (one) scope to this one action")
    run.add_argument("--revoke-on-exit", action="store_true", help="revoke the task when the command ends")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    run.set_defaults(run=run_command)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, ``0600`` from the start, atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def credential_process(answer: Path) -> list[str]:
    """What the AWS SDK runs for credentials: ``cat`` of the answer file."""
    return [shutil.which("cat") or "/bin/cat", str(answer)]


class Workspace:
    """The private directory (``0700``) holding the command's token files."""

    def __init__(self, gateway: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="capbroker-run-"))
        self.gateway = gateway

    def write(self, tokens: Split, environ: Mapping[str, str] = os.environ) -> None:
        if tokens.git:
            if not self.gateway:
                raise UsageError("git scopes need --gateway: git reaches its hosts through it")
            _write_private(self.dir / GIT_INCLUDE, git_include_text(self.gateway, tokens.git))
        for token in tokens.other:
            _write_private(self.dir / token_file_name(token.audience), token.token + "\n")
        bucket = bucket_token(tokens.other)
        if bucket is not None:
            if not self.gateway:
                raise UsageError("bucket scopes need --gateway: the AWS SDK reaches S3 through it")
            _write_private(self.dir / AWS_ANSWER, json.dumps(credential_json(bucket)) + "\n")
            if not (self.dir / AWS_CONFIG).exists():
                process = credential_process(self.dir / AWS_ANSWER)
                _write_private(self.dir / AWS_CONFIG, config_text(process, region_of(environ)))
                _write_private(self.dir / AWS_CREDENTIALS, "")

    def environment(self, tokens: Split, inherited: Mapping[str, str]) -> dict[str, str]:
        """The command's whole environment: ``inherited`` with the tokens' variables."""
        env = dict(inherited)
        if self.gateway and bucket_token(tokens.other) is not None:
            env = without_aws(env) | aws_env(self.gateway, str(self.dir))
        env |= http_env(self.gateway, tokens.other, str(self.dir))
        if tokens.git and self.gateway:
            env |= git_env(inherited, self.gateway, sorted(tokens.git), str(self.dir / GIT_INCLUDE))
        return env

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Refresher(threading.Thread):
    """Mints the task's tokens again before they expire and rewrites the files."""

    def __init__(self, mint: Any, workspace: Workspace, tokens: Sequence[IssuedToken]) -> None:
        super().__init__(name="capbroker-refresh", daemon=True)
        self._mint = mint
        self._workspace = workspace
        self._due: float = min(refresh_at(t.issued_at, t.expires_at) for t in tokens)
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(max(0.0, self._due - time.time())):
            try:
                tokens = self._mint()
                self._workspace.write(split(tokens))
                self._due = min(refresh_at(t.issued_at, t.expires_at) for t in tokens)
            except (BrokerCallFailed, OSError, ValueError, UsageError) as e:
                print(f"broker run: could not refresh the tokens ({type(e).__name__}); retrying", file=sys.stderr)
                self._due = time.time() + RETRY_AFTER_FAILURE


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run_child(command: Sequence[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(list(command), env=env)  # noqa: S603 -- the user's own command
    except OSError as e:
        print(f"broker run: cannot run {command[0]!r}: {e.strerror}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _exit_status(child.wait())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_command(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return report_failure(UsageError("no command: broker run ... -- COMMAND [ARG...]"))
    if (args.resource or args.action) and len(args.scope) != 1:
        return report_failure(UsageError("--resource and --action narrow one scope: give exactly one --scope"))
    try:
        client = client_of(args, cache=False)
    except UsageError as e:
        return report_failure(e)
    with client:
        return _run_with(client, args, command)


def _run_with(client: BrokerClient, args: argparse.Namespace, command: Sequence[str]) -> int:
    workspace = Workspace(args.gateway)
    refresher: Refresher | None = None
    try:
        scopes = [scope_entry(s, args.resource, args.action) for s in args.scope]

        def mint() -> list[IssuedToken]:
            return client.mint(args.task, scopes, ttl=ttl_of(args))

        try:
            tokens = mint()
            parts = split(tokens)
            workspace.write(parts)
        except (UsageError, BrokerCallFailed) as e:
            return report_failure(e)
        except ValueError as e:
            return report_failure(UsageError(str(e)))
        refresher = Refresher(mint, workspace, tokens)
        refresher.start()
        # the command gets its tokens, never the agent's credential
        inherited = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        return _run_child(command, workspace.environment(parts, inherited))
    finally:
        try:
            if refresher is not None:
                refresher.stop()
                refresher.join(5)
        finally:
            workspace.remove()
            if args.revoke_on_exit:
                _revoke(client, args.task)


def _revoke(client: BrokerClient, task: str) -> None:
    try:
        client.revoke_task(task)
    except BrokerCallFailed as e:
        report_failure(e)
        print(f"broker run: the task {task!r} was NOT revoked", file=sys.stderr)
