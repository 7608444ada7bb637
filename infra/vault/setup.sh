#!/usr/bin/env sh
# One-time Vault/OpenBao setup for capbroker, run by an operator with an admin token
# (VAULT_ADDR/VAULT_TOKEN or BAO_ADDR/BAO_TOKEN set). Its standard output is the broker's
# token and nothing else (every other line goes to stderr), so it can be written straight
# to the token file:  infra/vault/setup.sh > /run/secrets/capbroker/vault-token
set -eu
VAULT="${VAULT:-bao}"          # or: VAULT=vault
KEY_TYPE="${KEY_TYPE:-ed25519}" # or ecdsa-p256 (signing_alg: ES256)
PERIOD="${PERIOD:-24h}"         # the broker renews its token half way through (renew-self)
cd "$(dirname "$0")"
{
  $VAULT secrets list -format=json | grep -q '"transit/"' || $VAULT secrets enable transit
  $VAULT write -f transit/keys/capbroker type="$KEY_TYPE" exportable=false allow_plaintext_backup=false
  $VAULT policy write capbroker capbroker-policy.hcl
  $VAULT policy write capbroker-rotate capbroker-rotate-policy.hcl
} >&2
# Downstream credentials (vault-kv, database scopes): with this admin token, also run
#   broker vault sync --config broker.yaml   (per-scope policies, the token role, the seal key)
# The broker's token: periodic (renewable, no max TTL), only the capbroker policy.
$VAULT token create -policy=capbroker -no-default-policy -period="$PERIOD" -orphan -field=token
echo
