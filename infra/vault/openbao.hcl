# OpenBao for infra/compose.yaml: integrated Raft storage on a volume, one node. The
# listener is plain HTTP on the compose network only; in production give it TLS
# (tls_cert_file / tls_key_file) and set the broker's vault_ca_file to its CA.
storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
}
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
api_addr      = "http://openbao:8200"
cluster_addr  = "http://openbao:8201"
disable_mlock = true
ui            = false
