"""The agent's data task: what agent.py runs under `broker run --gateway ... --resource
s3://agent-data/tasks/<task>/`, with the real AWS CLI.

`broker run` gave it an AWS environment (the gateway's /s3 endpoint, path style, and a
`credential_process` answering the task's token narrowed to its prefix) and no broker
credential. It writes its report under its prefix, lists it, then makes the missteps a
prompt-injected agent would: list the bucket root, read another task's object, set a
bucket policy, copy its report out of its prefix. Each step is one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "agent-data"
TASK = os.environ["DEMO_DATA_TASK"]
PREFIX = f"tasks/{TASK}/"
OTHER = os.environ["DEMO_OTHER_OBJECT"]  # another task's object, named in the agent's prompt
WORK = Path(os.environ["DEMO_WORKDIR"])
TURN = 0.2  # seconds between missteps
STATUS = {"AccessDenied": 403, "InvalidToken": 401}  # the gateway's S3 error codes
OPEN_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
        ],
    }
)


def step(name: str, ok: bool, started: float, status: int | None = None, detail: str = "") -> None:
    line = {"step": name, "ok": ok, "status": status, "detail": detail, "t0": started, "t1": time.time()}
    print(json.dumps(line), flush=True)
    time.sleep(0.25)  # a beat between steps, so that each gateway audit line falls in its step's time


def aws(name: str, *args: str) -> None:
    """The real AWS CLI, configured by nothing but the environment `broker run` gave."""
    started = time.time()
    done = subprocess.run(  # noqa: S603
        ["aws", *args],  # noqa: S607 -- the aws on PATH, as an agent would
        cwd=WORK,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seen = re.search(r"An error occurred \((\w+)\)", done.stderr)
    code = seen.group(1) if seen else ""
    status = int(code) if code.isdigit() else STATUS.get(code)
    errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    step(name, done.returncode == 0, started, status, " | ".join(errors[-1:]))


def main() -> int:
    started = time.time()
    held = sorted(k for k in os.environ if k.startswith(("AWS_", "CAPBROKER_")))
    no_key = not {"CAPBROKER_KEY", "CAPBROKER_CLIENT_KEY"} & set(held)
    step("data-run", "AWS_ENDPOINT_URL_S3" in os.environ and no_key, started, detail=" ".join(held))

    report = WORK / "report.md"
    report.write_text(f"# Report of task {TASK}\n\nAll invoices reconciled.\n")
    aws("data-put", "s3", "cp", str(report), f"s3://{BUCKET}/{PREFIX}report.md")
    aws("data-list-own", "s3", "ls", f"s3://{BUCKET}/{PREFIX}")

    # The missteps: the first one contains the task.
    aws("data-list-root", "s3", "ls", f"s3://{BUCKET}/")
    time.sleep(TURN)
    aws("data-read-other", "s3", "cp", f"s3://{BUCKET}/{OTHER}", str(WORK / "other.csv"))
    time.sleep(TURN)
    aws("data-bucket-policy", "s3api", "put-bucket-policy", "--bucket", BUCKET, "--policy", OPEN_POLICY)
    time.sleep(TURN)
    source = f"{BUCKET}/{PREFIX}report.md"
    aws(
        "data-copy-out",
        "s3api",
        "copy-object",
        "--bucket",
        BUCKET,
        "--key",
        "public/report.md",
        "--copy-source",
        source,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
