"""``broker aws-credentials``: an AWS SDK ``credential_process`` handing out a bucket token.

    [profile agent]
    credential_process = broker aws-credentials --broker URL --task T --scope S --key-file /run/agent-key
    s3 =
        addressing_style = path

prints ``{"Version": 1, "AccessKeyId": "capbroker", "SecretAccessKey": "capbroker",
"SessionToken": TOKEN, "Expiration": ISO8601}``: boto3, the AWS CLI and the other SDKs
send the token as ``X-Amz-Security-Token`` to the gateway's ``/s3`` endpoint and ask again
as the expiry nears. The token is cached on disk like ``broker token get``'s. Under
``broker run`` the command is not needed: it writes the same answer to a file the SDK
reads (``broker.client.aws_env``). Failures are one line on stderr, exit 1 (refused or
unreachable) or 2 (usage).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.agent_args import UsageError, add_broker_args, asked_token, report_failure
from broker.client import BrokerCallFailed
from broker.client.aws_env import bucket_token, credential_json


def register(commands: Any) -> None:
    aws = commands.add_parser("aws-credentials", help="an AWS credential_process: a bucket token as the session token")
    add_broker_args(aws)
    aws.add_argument("--resource", help="narrow the scope to this resource (s3://BUCKET/PREFIX/)")
    aws.add_argument("--action", help="narrow the scope to this one action")
    aws.add_argument("--no-cache", action="store_true", help="always mint; keep nothing on disk")
    aws.set_defaults(run=run_aws_credentials)


def run_aws_credentials(args: argparse.Namespace) -> int:
    try:
        token = asked_token(args)
    except (UsageError, BrokerCallFailed) as e:
        return report_failure(e)
    except OSError as e:
        return report_failure(UsageError(f"cannot keep the token cache: {e.strerror}"))
    if bucket_token([token]) is None:
        return report_failure(UsageError(f"scope {args.scope!r} grants no bucket capability"))
    print(json.dumps(credential_json(token)))
    return 0
