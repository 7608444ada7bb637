"""What ``broker run`` gives a command that uses S3 through the gateway: pure functions
from a bucket token to files and environment variables (the I/O is ``broker.cli.run_cmd``'s).

The command's AWS SDK (boto3, the AWS CLI, any SDK reading the shared config) is pointed
at the gateway and given the capability token as its session token:

* ``AWS_ENDPOINT_URL_S3=<gateway>/s3``;
* ``AWS_CONFIG_FILE``: a private file with a ``[default]`` profile: path-style addressing,
  a region, and ``credential_process`` printing an *answer file* (``aws-credentials.json``,
  ``credential_json``) that ``broker run`` rewrites whenever it mints the token again.
  SDKs call ``credential_process`` again when the expiry it reported is near, which for
  a token of minutes is every request: reading a file costs a ``cat``, where starting
  ``broker aws-credentials`` would cost a Python start; and the command needs no broker
  credential of its own;
* ``AWS_SHARED_CREDENTIALS_FILE``: an empty private file, so no inherited profile keys;
* every inherited ``AWS_*`` variable except a few harmless ones (``KEPT``) is removed
  (keys, session tokens, profiles, role and web-identity settings, container and instance
  metadata endpoints, other endpoint URLs), and ``AWS_EC2_METADATA_DISABLED=true``: the
  SDK's credential chain finds the token and nothing else.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Final

from broker.client.freshness import IssuedToken

AWS_CONFIG = "aws-config"
AWS_CREDENTIALS = "aws-credentials"  # the empty shared-credentials file
AWS_ANSWER = "aws-credentials.json"  # what credential_process prints
#: the access key id and secret the SDK signs with: placeholders the gateway ignores
PLACEHOLDER: Final = "capbroker"
DEFAULT_REGION: Final = "us-east-1"
#: inherited AWS_* variables left to the command: none names a credential, a profile or
#: an endpoint
KEPT: Final = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CA_BUNDLE",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_DEFAULT_OUTPUT",
        "AWS_PAGER",
        "AWS_CLI_AUTO_PROMPT",
        "AWS_CLI_FILE_ENCODING",
        "AWS_METADATA_SERVICE_TIMEOUT",
        "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
    }
)


def bucket_token(tokens: Sequence[IssuedToken]) -> IssuedToken | None:
    """The one token with bucket capabilities (an SDK's default profile holds one)."""
    found = [t for t in tokens if any(c.get("kind") == "bucket" for c in t.capabilities)]
    if len(found) > 1:
        raise ValueError("two tokens for bucket scopes (different audiences): mint them in separate runs")
    return found[0] if found else None


def iso8601(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def credential_json(token: IssuedToken) -> dict[str, object]:
    """The ``credential_process`` answer: the token as the session token, with its expiry."""
    return {
        "Version": 1,
        "AccessKeyId": PLACEHOLDER,
        "SecretAccessKey": PLACEHOLDER,
        "SessionToken": token.token,
        "Expiration": iso8601(token.expires_at),
    }


def config_text(credential_process: Sequence[str], region: str) -> str:
    """The private AWS config: one ``[default]`` profile, path style, the process."""
    command = " ".join(shlex.quote(part) for part in credential_process)
    return (
        "[default]\n"
        f"region = {region}\n"
        f"credential_process = {command}\n"
        "s3 =\n"
        "    addressing_style = path\n"
        # checksums only where S3 requires them: fewer aws-chunked trailers to de-chunk
        "request_checksum_calculation = when_required\n"
        "response_checksum_validation = when_required\n"
    )


def region_of(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def without_aws(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without any inherited ``AWS_*`` variable but the ``KEPT`` ones."""
    return {k: v for k, v in environ.items() if not k.upper().startswith("AWS_") or k in KEPT}


def aws_env(gateway: str, workspace: str) -> dict[str, str]:
    """The variables pointing the command's SDK at the gateway and the private files."""
    return {
        "AWS_ENDPOINT_URL_S3": gateway.rstrip("/") + "/s3",
        "AWS_CONFIG_FILE": f"{workspace}/{AWS_CONFIG}",
        "AWS_SHARED_CREDENTIALS_FILE": f"{workspace}/{AWS_CREDENTIALS}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
