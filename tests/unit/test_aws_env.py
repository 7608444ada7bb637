"""What ``broker run`` gives an AWS SDK for a bucket scope: the gateway's ``/s3`` endpoint,
a private config (path style, a ``credential_process`` reading an answer file), an empty
shared-credentials file and no inherited AWS credential, profile or endpoint variable."""

from __future__ import annotations

import configparser
import json
import shlex
import stat
import subprocess
from collections.abc import Iterator

import pytest

from broker.cli.agent_args import UsageError
from broker.cli.run_cmd import Workspace
from broker.client import IssuedToken
from broker.client.aws_env import (
    AWS_ANSWER,
    KEPT,
    bucket_token,
    config_text,
    credential_json,
    iso8601,
    region_of,
    without_aws,
)
from broker.client.run_env import split

INHERITED = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/agent",
    "AWS_ACCESS_KEY_ID": "AKIAREAL",
    "AWS_SECRET_ACCESS_KEY": "real-secret",
    "AWS_SESSION_TOKEN": "real-session",
    "AWS_SECURITY_TOKEN": "real-session",
    "AWS_PROFILE": "prod",
    "AWS_DEFAULT_PROFILE": "prod",
    "AWS_ROLE_ARN": "arn:aws:iam::1:role/admin",
    "AWS_ROLE_SESSION_NAME": "x",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/x",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/t",
    "AWS_CONFIG_FILE": "/home/agent/.aws/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/home/agent/.aws/credentials",
    "AWS_ENDPOINT_URL": "https://s3.amazonaws.com",
    "AWS_ENDPOINT_URL_S3": "https://s3.amazonaws.com",
    "AWS_EC2_METADATA_DISABLED": "false",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://169.254.169.254",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
    "AWS_ACCESS_KEY": "legacy",
    "AWS_SECRET_KEY": "legacy",
    "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z",
    "AWS_SDK_LOAD_CONFIG": "1",
    "AWS_REGION": "eu-west-1",
    "AWS_CA_BUNDLE": "/etc/ssl/ca.pem",
}


def token(kind: str = "bucket", aud: str = "storage-gateway", issued: int = 1_764_900_000) -> IssuedToken:
    resource = "s3://acme/tasks/t1/" if kind == "bucket" else "https://api.x/v1/"
    cap = {"kind": kind, "resource": resource, "actions": ["read"], "scope": "s"}
    return IssuedToken("t1", aud, f"tok-{aud}-{issued}", f"id-{issued}", issued, issued + 300, (cap,))


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    ws = Workspace("http://127.0.0.1:8800/")
    yield ws
    ws.remove()


def test_the_credential_process_answer_holds_the_token_as_the_session_token() -> None:
    t = token()
    assert credential_json(t) == {
        "Version": 1,
        "AccessKeyId": "capbroker",
        "SecretAccessKey": "capbroker",
        "SessionToken": t.token,
        "Expiration": iso8601(t.expires_at),
    }
    assert iso8601(1_764_900_300) == "2025-12-05T02:05:00Z"


def test_only_a_token_with_bucket_capabilities_is_the_sdks_and_two_are_refused() -> None:
    assert bucket_token([token("http", "api"), token()]) == token()
    assert bucket_token([token("http", "api")]) is None
    with pytest.raises(ValueError, match="two tokens for bucket scopes"):
        bucket_token([token(), token(aud="other-gateway")])


def test_every_inherited_aws_variable_but_the_harmless_ones_is_removed() -> None:
    kept = without_aws(INHERITED)
    assert kept == {"PATH": "/usr/bin:/bin", "HOME": "/home/agent", "AWS_REGION": "eu-west-1",
                    "AWS_CA_BUNDLE": "/etc/ssl/ca.pem"}  # fmt: skip
    assert not any(name in KEPT for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"))


def test_the_region_comes_from_the_environment_or_defaults() -> None:
    assert region_of({"AWS_DEFAULT_REGION": "eu-central-1"}) == "eu-central-1"
    assert region_of({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "x"}) == "eu-west-1"
    assert region_of({}) == "us-east-1"


def test_the_config_names_path_style_and_the_process_quoted() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(config_text(["/bin/cat", "/run/a dir/aws-credentials.json"], "eu-west-1"))
    profile = parser["default"]
    assert shlex.split(profile["credential_process"]) == ["/bin/cat", "/run/a dir/aws-credentials.json"]
    assert profile["region"] == "eu-west-1"
    assert profile["s3"].split() == ["addressing_style", "=", "path"]


def test_the_child_environment_points_the_sdk_at_the_gateway_and_nothing_else(workspace: Workspace) -> None:
    parts = split([token()])
    workspace.write(parts, INHERITED)
    env = workspace.environment(parts, INHERITED)

    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
    assert aws == {
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8800/s3",
        "AWS_CONFIG_FILE": f"{workspace.dir}/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": f"{workspace.dir}/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "eu-west-1",
        "AWS_CA_BUNDLE": "/etc/ssl/ca.pem",
    }
    assert env["CAPBROKER_TOKEN"] == token().token  # the http-style variables as for any token
    for name in ("aws-config", "aws-credentials", AWS_ANSWER):
        assert stat.S_IMODE((workspace.dir / name).stat().st_mode) == 0o600
    assert (workspace.dir / "aws-credentials").read_text() == ""


def test_the_credential_process_runs_and_answers_the_current_token(workspace: Workspace) -> None:
    """What the SDK does: run the configured process, read its JSON; after a refresh the
    same process answers the new token."""
    workspace.write(split([token()]), INHERITED)
    config = configparser.ConfigParser()
    config.read(workspace.dir / "aws-config")
    process = shlex.split(config["default"]["credential_process"])

    def answer() -> dict[str, object]:
        done = subprocess.run(process, capture_output=True, text=True, check=True, timeout=10)
        parsed: dict[str, object] = json.loads(done.stdout)
        return parsed

    assert answer() == credential_json(token())
    workspace.write(split([token(issued=1_764_900_240)]), INHERITED)
    assert answer()["SessionToken"] == token(issued=1_764_900_240).token


def test_without_a_bucket_token_the_aws_variables_are_left_alone(workspace: Workspace) -> None:
    parts = split([token("http", "api")])
    workspace.write(parts, INHERITED)
    env = workspace.environment(parts, INHERITED)
    assert {k: v for k, v in env.items() if k.startswith("AWS_")} == {
        k: v for k, v in INHERITED.items() if k.startswith("AWS_")
    }
    assert not (workspace.dir / "aws-config").exists()


def test_a_bucket_scope_needs_the_gateway() -> None:
    ws = Workspace(None)
    try:
        with pytest.raises(UsageError, match="bucket scopes need --gateway"):
            ws.write(split([token()]), INHERITED)
    finally:
        ws.remove()


def test_the_answer_file_is_replaced_whole_never_rewritten_in_place(workspace: Workspace) -> None:
    """A reader (the SDK's ``cat``) sees the old answer or the new one, never half."""
    workspace.write(split([token()]), INHERITED)
    before = (workspace.dir / AWS_ANSWER).stat().st_ino
    workspace.write(split([token(issued=1_764_900_240)]), INHERITED)
    assert (workspace.dir / AWS_ANSWER).stat().st_ino != before
    assert [p.name for p in workspace.dir.iterdir() if p.name.startswith(".")] == []
