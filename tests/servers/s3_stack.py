"""The gateway stack (``tests.servers.gateway_stack``) with a bucket route in front of moto.

* moto's S3 server (``tests.servers.s3_upstream``, its own process, SigV4 checks on) with
  the bucket ``agent-data`` and an IAM user allowed ``s3:*`` on it;
* that user's keys in OpenBao KV v2 at ``secret/data/gateway/s3`` (read by the gateway
  with its own token, as the other routes' secrets);
* the route ``kind: bucket`` for ``agent-data``, audience ``s3-gateway``; scopes
  ``gw-bucket`` (every action on the bucket) and ``gw-bucket-budget``, narrowed per test.

``client(token)`` is stock boto3 as an agent configures it: ``endpoint_url=GW/s3``, path
style, placeholder keys, and the capability token as the session token.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.gateway_stack import REPO, GatewayStack, Process, start_stack
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.vault_setup import admin_client

BUCKET = "agent-data"
AUDIENCE = "s3-gateway"
REGION = "us-east-1"
KV_PATH = "gateway/s3"
#: what an agent's S3 client holds besides the token: placeholders, never valid anywhere
FAKE_KEY_ID = "AKIACAPBROKERAGENT00"
FAKE_SECRET = "placeholder-secret-the-gateway-ignores"


@dataclass
class S3Upstream:
    port: int
    keys: dict[str, str]
    log: Path
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """Every request moto received so far, in order."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def route(self, **overrides: Any) -> dict[str, Any]:
        route = {
            "kind": "bucket",
            "audience": AUDIENCE,
            "bucket": BUCKET,
            "upstream": self.url,
            "region": REGION,
            "credential": {
                "vault": f"secret/data/{KV_PATH}",
                "access_key_id": "access_key_id",
                "secret_access_key": "secret_access_key",
            },
        }
        route.update(overrides)
        return route


def start_s3_upstream(root: Path, buckets: tuple[str, ...] = (BUCKET,)) -> S3Upstream:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    keys_file, log, out_path = root / "s3-keys.json", root / "s3-requests.jsonl", root / "s3-upstream.log"
    argv = [sys.executable, "-m", "tests.servers.s3_upstream", "--port", str(port), "--keys", str(keys_file)]
    argv += ["--log", str(log), *(a for b in buckets for a in ("--bucket", b))]
    with out_path.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
    process = Process(proc, out_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited:\n{out_path.read_text(errors='replace')[-3000:]}")
        if keys_file.exists():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return S3Upstream(port, json.loads(keys_file.read_text()), log, process)
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"moto not up within 60s:\n{out_path.read_text(errors='replace')[-3000:]}")


def put_s3_keys(bao: BaoServer, keys: dict[str, str]) -> None:
    client = admin_client(bao)
    try:
        if "secret/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        fields = {k: keys[k] for k in ("access_key_id", "secret_access_key")}
        client.secrets.kv.v2.create_or_update_secret(KV_PATH, fields, mount_point="secret")
    finally:
        client.adapter.close()


def start_s3_stack(root: Path, bao: BaoServer, redis: RedisServer) -> GatewayStack:
    s3 = start_s3_upstream(root / "s3")
    try:
        put_s3_keys(bao, s3.keys)
        return start_stack(root / "stack", bao, redis, s3=s3)
    except BaseException:
        s3.process.stop()
        raise


def client(endpoint: str, *, token: str | None, key_id: str = FAKE_KEY_ID, secret: str = FAKE_SECRET) -> Any:
    """Stock boto3 as an agent configures it (no retries: a refusal shows at once)."""
    import boto3
    from botocore.config import Config

    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):  # their DEBUG lines hold the token
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30
        ),
    )


def gateway_client(stack: GatewayStack, token: str) -> Any:
    return client(f"{stack.gateway_url}/s3", token=token)


def scope(resource: str, actions: list[str], name: str = "gw-bucket") -> dict[str, Any]:
    """A narrowing of ``gw-bucket``: ``s3://agent-data/...`` and some of its actions."""
    return {"scope": name, "resource": resource, "actions": actions}
