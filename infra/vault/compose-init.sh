#!/usr/bin/env sh
# compose's one-shot OpenBao service: initialise (once), unseal, and hand the broker its
# token. For trying the stack: the single unseal key and the root token are kept on the
# bao-init volume so that a restarted stack unseals itself. In production, unseal with
# several key holders or auto-unseal, and revoke the root token after setup.
#
# Standard output of setup.sh is the token alone; it is written to the token file by
# rename, so the broker (which follows vault_token_file) never reads half a token.
set -eu
BAO="${BAO:-bao}"
export BAO_ADDR="${BAO_ADDR:-http://openbao:8200}"
STATE_DIR="${STATE_DIR:-/bao-init}"
SECRETS_DIR="${SECRETS_DIR:-/secrets}"
SETUP_DIR="${SETUP_DIR:-/setup}"

status() { "$BAO" status -format=json 2>/dev/null || true; }
tries=0
until status | grep -q '"initialized"'; do   # reachable (sealed or not)
  tries=$((tries + 1)); [ "$tries" -lt 60 ] || { echo "OpenBao at $BAO_ADDR does not answer" >&2; exit 1; }
  sleep 1
done
if status | grep -q '"initialized": false'; then
  umask 077
  "$BAO" operator init -key-shares=1 -key-threshold=1 > "$STATE_DIR/init.txt"
  echo "OpenBao initialised (unseal key and root token in the bao-init volume)" >&2
fi
UNSEAL=$(sed -n 's/^Unseal Key 1: //p' "$STATE_DIR/init.txt")
if status | grep -q '"sealed": true'; then
  "$BAO" operator unseal "$UNSEAL" >/dev/null
fi
tries=0
until status | grep -q '"sealed": false'; do
  tries=$((tries + 1)); [ "$tries" -lt 30 ] || { echo "OpenBao stays sealed" >&2; exit 1; }
  sleep 1
done
# a Raft cluster (infra/compose-ha.yaml): the other nodes, which joined by retry_join,
# are unsealed with the same key
for node in ${BAO_UNSEAL_ADDRS:-}; do
  tries=0
  until BAO_ADDR="$node" status | grep -q '"sealed": false'; do   # joined and unsealed
    tries=$((tries + 1)); [ "$tries" -lt 90 ] || { echo "OpenBao node $node stays sealed" >&2; exit 1; }
    if BAO_ADDR="$node" status | grep -q '"sealed": true'; then
      BAO_ADDR="$node" "$BAO" operator unseal "$UNSEAL" >/dev/null 2>&1 || true   # also completes the join
    fi
    sleep 1
  done
done
BAO_TOKEN=$(sed -n 's/^Initial Root Token: //p' "$STATE_DIR/init.txt")
export BAO_TOKEN
# a token from an earlier start that still works is kept (the brokers renew it)
if [ -s "$SECRETS_DIR/vault-token" ] && BAO_TOKEN=$(cat "$SECRETS_DIR/vault-token") "$BAO" token lookup >/dev/null 2>&1; then
  echo "the broker's Vault token is still valid; kept" >&2
  exit 0
fi
tries=0
until VAULT="$BAO" sh "$SETUP_DIR/setup.sh" > "$SECRETS_DIR/vault-token.new"; do   # raft may still elect
  tries=$((tries + 1)); [ "$tries" -lt 20 ] || exit 1
  sleep 1
done
chmod 0444 "$SECRETS_DIR/vault-token.new"
mv "$SECRETS_DIR/vault-token.new" "$SECRETS_DIR/vault-token"
echo "the broker's Vault token is in the broker-secrets volume" >&2
