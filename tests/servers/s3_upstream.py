"""moto's S3 server as its own process on loopback, with SigV4 checks on, recording every
request it receives.

``python -m tests.servers.s3_upstream --port P --keys FILE --log FILE [--bucket B ...]``

* IAM auth is on from the first request (``INITIAL_NO_AUTH_ACTION_COUNT=0``): every
  request must carry a SigV4 signature that moto recomputes with the secret of a known
  access key (``SignatureDoesNotMatch``, ``InvalidAccessKeyId`` otherwise), and the key's
  user must be allowed the action by its IAM policy (``AccessDenied``).
* Before serving, through moto's backend API (no request, so nothing to authenticate):
  the buckets, and an IAM user ``capbroker-gateway`` whose inline policy allows ``s3:*``
  on those buckets and their objects, with one access key. The key id and secret are
  written to ``--keys`` (JSON, mode 0600) for the test to put in OpenBao KV.
* Every request is appended to ``--log`` (JSON lines) when its answer starts: method,
  raw path, query, the access key id it was signed with, its ``x-amz-content-sha256``,
  and the status. A test reads it to say what reached S3, or that nothing did.

What moto does not check: the body against the signed ``x-amz-content-sha256`` (it takes
the declared hash), and the signature's date against the clock.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # before moto reads its settings

from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import run_simple

USER = "capbroker-gateway"
REGION = "us-east-1"
_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")


def prepare(buckets: Iterable[str], region: str = REGION) -> dict[str, str]:
    """The buckets, and the IAM user allowed ``s3:*`` on them; its access key."""
    names = list(buckets)
    s3 = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for name in names:
        s3.create_bucket(name, region)
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region, USER)
    resources = [f"arn:aws:s3:::{b}" for b in names] + [f"arn:aws:s3:::{b}/*" for b in names]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}]}
    iam.put_user_policy(USER, "s3-test-buckets", json.dumps(policy))
    key = iam.create_access_key(USER)
    return {"access_key_id": key.access_key_id, "secret_access_key": key.secret_access_key, "region": region}


class Recorder:
    """WSGI middleware: one JSON line per request, written when its answer starts."""

    def __init__(self, app: Callable[..., Any], log: Path) -> None:
        self._app, self._log, self._lock = app, log, threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        auth = str(environ.get("HTTP_AUTHORIZATION", ""))
        found = _CREDENTIAL.search(auth) or _CREDENTIAL.search(str(environ.get("QUERY_STRING", "")))
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING", ""),
            "access_key_id": found.group(1) if found else None,
            "content_sha256": environ.get("HTTP_X_AMZ_CONTENT_SHA256"),
            "security_token": "HTTP_X_AMZ_SECURITY_TOKEN" in environ,
        }

        def recording_start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            entry["status"] = int(status.split(maxsplit=1)[0])
            line = json.dumps(entry) + "\n"
            with self._lock, self._log.open("a") as out:
                out.write(line)
            return start_response(status, headers, *rest)

        return self._app(environ, recording_start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--bucket", action="append", default=[])
    parser.add_argument("--region", default=REGION)
    args = parser.parse_args(argv)
    keys = prepare(args.bucket or ["agent-data"], args.region)
    partial = args.keys.with_suffix(".tmp")
    partial.write_text(json.dumps(keys))
    partial.chmod(0o600)
    partial.replace(args.keys)  # whole or absent: the test waits for it
    app = Recorder(DomainDispatcherApplication(create_backend_app), args.log)
    run_simple("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
