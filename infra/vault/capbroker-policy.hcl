# capbroker: the policy of the broker's own Vault token (least privilege, SPEC 6).
#
# The broker signs capability tokens with the Transit key "capbroker" and publishes its
# public versions. The private key never leaves Vault: no export, no backup, no key
# config, no create, no rotate (rotation is an operator action:
# capbroker-rotate-policy.hcl). sys/health needs no token and no policy.

# Sign: POST transit/sign/capbroker with key_version, marshaling_algorithm=jws (and
# hash_algorithm=sha2-256 for ecdsa-p256) in the body. The hash-in-the-URL form
# (transit/sign/capbroker/<hash>) is not granted and not used.
path "transit/sign/capbroker" {
  capabilities = ["update"]
}

# Read the key's public versions (the JWKS) and its latest / min_decryption_version.
path "transit/keys/capbroker" {
  capabilities = ["read"]
}

# Agent identity, method "vault" (SPEC 2.2): look up the token an agent presents.
path "auth/token/lookup" {
  capabilities = ["update"]
}

# Downstream credentials (SPEC 6). Task tokens are created only through the token role
# capbroker-task, which `broker vault sync` (an admin) writes: orphan, policies only
# capbroker-task and capbroker-scope-*, explicit max TTL. This token writes no ACL policy.
path "auth/token/create/capbroker-task" {
  capabilities = ["update"]
}

# Revoke a task token (its children and leases with it) or one child, by accessor.
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# Seal task tokens for the state store (Redis holds only ciphertext and accessors).
path "transit/encrypt/capbroker-task-tokens" {
  capabilities = ["update"]
}
path "transit/decrypt/capbroker-task-tokens" {
  capabilities = ["update"]
}

# Its own token: how long it has left, and renewal half way through (a periodic token from
# setup.sh lives only as long as it is renewed; broker/backends/vault_token.py).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
