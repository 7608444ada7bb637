# The gateway's own Vault token (broker gateway, SPEC 9): read-only on the upstream
# secrets it attaches, nothing else. KV v2: the data path holds the secret's fields.
# Write, list, delete, metadata and every other path are denied by omission.
path "secret/data/gateway/*" {
  capabilities = ["read"]
}
