"""The agent's side end to end: stock boto3 inside ``broker run --gateway`` (its private
AWS config: the gateway's ``/s3`` endpoint, path style, ``credential_process``) writes and
reads through the bucket route to moto, and keeps working past its first token's expiry
because the SDK asks ``credential_process`` again. Nothing in the child's environment is a
real key: the gateway's keys stay with the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.gateway_stack import AGENT, GatewayStack, own_stack
from tests.servers.processes import BaoServer
from tests.servers.s3_stack import BUCKET, start_s3_stack

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

BIN = Path(sys.executable).parent

#: the agent's program: boto3 configured by nothing but the environment broker run made
AGENT_PROGRAM = """\
import json, os, sys, time
import boto3
task, wait = sys.argv[1], float(sys.argv[2])
s3 = boto3.client("s3")
s3.put_object(Bucket="agent-data", Key=f"tasks/{task}/first.txt", Body=b"first")
first = s3._request_signer._credentials.get_frozen_credentials().token
expires = time.time() + wait
while time.time() < expires:  # past the first token's lifetime: the SDK must ask again
    time.sleep(0.2)
s3.put_object(Bucket="agent-data", Key=f"tasks/{task}/second.txt", Body=b"second")
body = s3.get_object(Bucket="agent-data", Key=f"tasks/{task}/first.txt")["Body"].read().decode()
try:
    s3.create_bucket(Bucket="agent-data")
    refused = None
except Exception as e:
    refused = e.response["Error"]["Code"]
print(json.dumps({
    "read": body,
    "refused": refused,
    "first_token_was_last": first == s3._request_signer._credentials.get_frozen_credentials().token,
    "aws_env": sorted(k for k in os.environ if k.startswith("AWS_")),
    "keys_in_env": [v for k, v in os.environ.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")],
}))
"""


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-s3-agent"), bao_server, start_s3_stack) as built:
        yield built


def broker_run(stack: GatewayStack, task: str, ttl: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPBROKER_", "AWS_"))}
    env["CAPBROKER_KEY"] = stack.broker.policy.keys[AGENT]
    env["AWS_ACCESS_KEY_ID"] = "AKIAINHERITEDBYPARENT"  # the parent's AWS keys must not reach the child
    env["AWS_REGION"] = "us-east-1"
    argv = [str(BIN / "broker"), "run", "--broker", stack.broker.url, "--task", task, "--scope", "gw-bucket"]
    argv += ["--ttl", ttl, "--gateway", stack.gateway_url, "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_boto3_under_broker_run_works_through_the_gateway_and_refreshes_its_token(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-agent")
    result = broker_run(stack, task, "4s", sys.executable, "-c", AGENT_PROGRAM, task, "6")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["read"] == "first"
    assert seen["refused"] == "AccessDenied"  # a bucket-level operation: refused, and the task contained
    assert seen["first_token_was_last"] is False
    assert seen["keys_in_env"] == []
    writes = [
        a for a in stack.audit_lines() if a.get("task") == task and a.get("action") == "write" and a["status"] == 200
    ]
    assert len({a["jti"] for a in writes}) == 2, writes  # two tokens: the second put used the refreshed one
    stored = [r for r in stack.s3.requests() if r["path"].startswith(f"/{BUCKET}/tasks/{task}/")]
    assert {r["access_key_id"] for r in stored} == {stack.s3.keys["access_key_id"]}
