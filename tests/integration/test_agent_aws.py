"""The agent's AWS side against a real ``broker dev`` (the ``analyst`` agent of scopes/,
whose ``reports-write`` scope is a bucket scope): ``broker aws-credentials`` prints the
``credential_process`` answer, and ``broker run`` gives its command an AWS environment in
which the SDK's credential chain finds the token and nothing the parent held.

``run_with_aws`` is the wiring the bucket route's end-to-end tests reuse with a real boto3
and gateway; here the command reads its environment the way botocore does (the config
file, ``credential_process`` run through ``shlex``), so no SDK is needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.verify import Verifier
from tests.integration.test_example_walkthrough import wait_for
from tests.servers.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Dev = tuple[str, str]  # the broker's URL, the analyst's key

#: what the command prints: its AWS variables and what the configured process answers
SDK_VIEW = """\
import configparser, json, os, shlex, subprocess, sys, time
config = configparser.ConfigParser()
config.read(os.environ["AWS_CONFIG_FILE"])
process = shlex.split(config["default"]["credential_process"])
ask = lambda: json.loads(subprocess.run(process, capture_output=True, text=True, check=True).stdout)
first = ask()
deadline = time.monotonic() + float(sys.argv[1])
while ask()["SessionToken"] == first["SessionToken"] and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({
    "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "CAPBROKER_KEY"))},
    "config": {k: v for k, v in config["default"].items()},
    "shared_credentials": open(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).read(),
    "first": first,
    "last": ask(),
}))
"""


@pytest.fixture(scope="module")
def analyst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    port = free_port()
    log = tmp_path_factory.mktemp("aws-dev") / "dev-console.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "broker"), "dev", "--port", str(port), "--scopes", str(REPO / "scopes"),
             "--agent", "analyst", "--service", "storage-gateway"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/readyz", proc, log)
        found = re.search(r"^agent analyst key:\s+(cbk_\S+)$", log.read_text(), re.M)
        assert found, log.read_text()
        yield url, found.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def broker(*args: str, key: str | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAPBROKER_", "AWS_"))} | (env or {})
    if key is not None:
        clean["CAPBROKER_KEY"] = key
    return subprocess.run(
        [str(BIN / "broker"), *args], env=clean, capture_output=True, text=True, timeout=90, check=False
    )


def run_with_aws(
    url: str,
    key: str,
    task: str,
    gateway: str,
    *command: str,
    scope: str = "reports-write",
    ttl: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``broker run --scope SCOPE --gateway GATEWAY -- COMMAND`` as an agent runs it, with
    no inherited ``CAPBROKER_*`` or ``AWS_*`` variable but those in ``env``."""
    extra = ["--ttl", ttl] if ttl else []
    return broker("run", "--broker", url, "--task", task, "--scope", scope, *extra,
                  "--gateway", gateway, "--", *command, key=key, env=env)  # fmt: skip


def verified(url: str, token: str) -> Any:
    return Verifier(issuer=url, audience="storage-gateway", jwks_url=f"{url}/.well-known/jwks.json").verify(token)


def test_aws_credentials_prints_the_credential_process_answer(analyst: Dev, tmp_path: Path) -> None:
    url, key = analyst
    args = ("aws-credentials", "--broker", url, "--task", "aws-1", "--scope", "reports-write")
    env = {"CAPBROKER_CACHE_DIR": str(tmp_path / "cache")}

    first = broker(*args, key=key, env=env)
    again = broker(*args, key=key, env=env)
    narrowed = broker(*args, "--resource", "s3://acme-reports/agents/aws-1/", key=key, env=env)

    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert set(answer) == {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert (answer["Version"], answer["AccessKeyId"], answer["SecretAccessKey"]) == (1, "capbroker", "capbroker")
    grant = verified(url, answer["SessionToken"])
    assert grant.task == "aws-1"
    assert grant.allows("bucket", "s3://acme-reports/agents/x", "write")
    assert answer["Expiration"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grant.expires_at))
    assert json.loads(again.stdout)["SessionToken"] == answer["SessionToken"], "cached like token get"
    small = verified(url, json.loads(narrowed.stdout)["SessionToken"])
    assert small.allows("bucket", "s3://acme-reports/agents/aws-1/r.csv", "write")
    assert not small.allows("bucket", "s3://acme-reports/agents/aws-2/r.csv", "write")


def test_aws_credentials_fails_in_one_line(analyst: Dev, tmp_path: Path) -> None:
    url, key = analyst
    env = {"CAPBROKER_CACHE_DIR": str(tmp_path / "cache")}
    base = ("aws-credentials", "--broker", url, "--task", "aws-2")
    unknown = broker(*base, "--scope", "nope", key=key, env=env)
    no_key = broker(*base, "--scope", "reports-write", key=None, env=env)
    down = broker("aws-credentials", "--broker", "http://127.0.0.1:9", "--task", "t", "--scope", "reports-write",
                  key=key, env=env)  # fmt: skip

    for result, status in ((unknown, 1), (no_key, 2), (down, 1)):
        assert result.returncode == status, result.stderr
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "unknown_scope" in unknown.stderr
    assert "could not be reached" in down.stderr


def test_run_gives_the_sdk_the_gateway_the_token_and_nothing_inherited(analyst: Dev) -> None:
    url, key = analyst
    parent = {"AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SECRET_ACCESS_KEY": "real", "AWS_PROFILE": "prod",
              "AWS_SESSION_TOKEN": "real-session", "AWS_ROLE_ARN": "arn:aws:iam::1:role/x",
              "AWS_ENDPOINT_URL": "https://s3.amazonaws.com", "AWS_REGION": "eu-west-1"}  # fmt: skip

    result = run_with_aws(url, key, "aws-run", "http://127.0.0.1:9/", sys.executable, "-c", SDK_VIEW, "0", env=parent)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    workspace = str(Path(seen["env"]["AWS_CONFIG_FILE"]).parent)
    assert seen["env"] == {
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9/s3",
        "AWS_CONFIG_FILE": f"{workspace}/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": f"{workspace}/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "eu-west-1",
    }
    assert seen["config"]["region"] == "eu-west-1"
    assert "addressing_style = path" in seen["config"]["s3"]
    assert seen["shared_credentials"] == ""
    grant = verified(url, seen["first"]["SessionToken"])
    assert grant.task == "aws-run"
    assert seen["first"]["Expiration"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grant.expires_at))
    assert not Path(workspace).exists(), "the files are gone with the command"


def test_run_keeps_the_answer_fresh_for_the_sdk_to_read_again(analyst: Dev) -> None:
    """A 4 s token is minted again 1 s before it expires; the configured process answers
    the new one (the command waits for the change, bounded by 30 s)."""
    url, key = analyst
    result = run_with_aws(url, key, "aws-fresh", "http://127.0.0.1:9", sys.executable, "-c", SDK_VIEW, "30", ttl="4s")

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    first, last = verified(url, seen["first"]["SessionToken"]), verified(url, seen["last"]["SessionToken"])
    assert seen["first"]["SessionToken"] != seen["last"]["SessionToken"]
    assert last.task == first.task == "aws-fresh"
    assert last.expires_at > first.expires_at


def test_a_bucket_scope_without_a_gateway_is_a_usage_error(analyst: Dev) -> None:
    url, key = analyst
    result = broker("run", "--broker", url, "--task", "aws-nogw", "--scope", "reports-write", "--",
                    sys.executable, "-c", "print('ran')", key=key)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert "bucket scopes need --gateway" in result.stderr


def test_run_narrows_its_one_scope_to_a_resource(analyst: Dev) -> None:
    url, key = analyst
    narrow = ("--resource", "s3://acme-reports/agents/aws-narrow/", "--action", "write")
    result = broker("run", "--broker", url, "--task", "aws-narrow", "--scope", "reports-write", *narrow,
                    "--gateway", "http://127.0.0.1:9", "--", sys.executable, "-c", SDK_VIEW, "0", key=key)  # fmt: skip
    two = broker("run", "--broker", url, "--task", "aws-narrow2", "--scope", "reports-write", "--scope",
                 "exports-read", *narrow, "--", sys.executable, "-c", "print('ran')", key=key)  # fmt: skip

    assert result.returncode == 0, result.stderr
    grant = verified(url, json.loads(result.stdout)["first"]["SessionToken"])
    assert grant.allows("bucket", "s3://acme-reports/agents/aws-narrow/r.csv", "write")
    assert not grant.allows("bucket", "s3://acme-reports/agents/aws-other/r.csv", "write")
    assert not grant.allows("bucket", "s3://acme-reports/agents/aws-narrow/r.csv", "read")
    assert (two.returncode, two.stdout) == (2, "")
    assert "give exactly one --scope" in two.stderr
