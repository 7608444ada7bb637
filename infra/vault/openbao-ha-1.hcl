# OpenBao node 1 of 3 in one integrated-Raft cluster (HA: one active node, two standbys).
# The files openbao-ha-1/2/3.hcl differ only in the node's name. Each node joins the
# others by retry_join once it is unsealed; unseal every node (Shamir, or auto-unseal in
# production). List every node in the broker's and the gateway's vault_addr:
#   vault_addr: http://openbao-1:8200,http://openbao-2:8200,http://openbao-3:8200
# The listener is plain HTTP on a private network only; in production give it TLS
# (tls_cert_file / tls_key_file, and leader_ca_cert_file in retry_join) and set the
# broker's vault_ca_file to its CA.
storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
  # elections within a few seconds of a leader's loss (5, the default, is for slow links)
  performance_multiplier = 1
  retry_join {
    leader_api_addr = "http://openbao-2:8200"
  }
  retry_join {
    leader_api_addr = "http://openbao-3:8200"
  }
}
listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}
api_addr     = "http://openbao-1:8200"
cluster_addr = "http://openbao-1:8201"
ui           = false
