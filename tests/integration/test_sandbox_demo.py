"""examples/sandbox-demo runs as the README says (`make demo`'s command) and its report says
what the product promises: the work is allowed, every misstep refused, the first one
contains the task, the upstreams received only the real credential (S3: only the gateway's
signatures, nothing outside the task's folder, no bucket policy, no copy), and no upstream
secret reached the agent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "sandbox-demo" / "demo.py"

# step label (start of the line) -> what the agent saw, the gateway's status and code
EXPECTED = {
    "2. git clone https://github.com/acme/widgets.git": ("allowed", "200"),
    "3. git push origin HEAD:refs/heads/agents/": ("allowed", "200"),
    "4. GET https://billing.internal/v1/invoices/2026-11": ("allowed", "200"),
    "5. misstep: git push origin HEAD:main": ("refused", "403 capability_denied"),
    "6. misstep: git clone https://github.com/acme/other.git": ("refused", "401 revoked"),
    "7. misstep: GET invoices with the attacker's key": ("refused", "401 revoked"),
    "9. aside: the clean task sends the attacker's key": ("allowed", "200"),
    "10. broker run: bucket token narrowed to tasks/": ("allowed", "-"),
    "11. aws s3 cp report.md s3://agent-data/tasks/": ("allowed", "200"),
    "12. aws s3 ls s3://agent-data/tasks/": ("allowed", "200"),
    "13. misstep: aws s3 ls s3://agent-data/": ("refused", "403 capability_denied"),
    "14. misstep: aws s3 cp s3://agent-data/tasks/nightly-export/": ("refused", "401 revoked"),
    "15. misstep: aws s3api put-bucket-policy": ("refused", "401 revoked"),
    "16. misstep: aws s3api copy-object to public/": ("refused", "401 revoked"),
}
#: what the report must say S3 itself saw and holds (moto's request log, then the bucket)
BUCKET_CHECKS = (
    "s3: every request was signed with the gateway's key, never the agent's",
    "s3: no capability token (session token) arrived",
    "reached S3 (no root listing, no other task's object)",
    "s3: no bucket policy was set",
    "s3: the report is under the task's folder",
    "s3: no copy was made outside the task's folder",
    "the data task's first misstep contained it",
)


def test_the_demo_runs_and_reports_every_refusal() -> None:
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=240, check=False)
    report = done.stdout
    rows = {
        m.group(1).strip(): m.group(2, 3)
        for m in re.finditer(r"^  (\d+\. .+?)\s+(allowed|refused|missing)\s+(.+)$", report, re.M)
    }
    assert rows, report + done.stderr
    assert any(
        label.startswith("1. ask the broker for tokens") and got == ("allowed", "-") for label, got in rows.items()
    )
    for prefix, (seen, gateway) in EXPECTED.items():
        (got,) = [got for label, got in rows.items() if label.startswith(prefix)]
        assert got[0] == seen, (prefix, report)
        assert got[1].startswith(gateway), (prefix, report)
    assert re.search(r"^  5\. misstep: git push origin HEAD:main .* containment: contained$", report, re.M), report
    assert re.search(r"^  13\. misstep: aws s3 ls s3://agent-data/ .* containment: contained$", report, re.M), report
    for check in BUCKET_CHECKS:
        assert re.search(rf"^  ok    .*{re.escape(check)}", report, re.M), (check, report)
    assert "git: acme/other was never reached" in report
    assert "api: the attacker's key never arrived" in report
    assert "no upstream secret in the agent's environment" in report
    assert "FAIL" not in report, report
    assert "LEAKED" not in report, report
    assert re.search(r"^RESULT: all \d+ checks held$", report, re.M), report
    assert done.returncode == 0, report + done.stderr
