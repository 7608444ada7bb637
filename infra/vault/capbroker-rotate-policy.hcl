# capbroker-rotate: for the operator running `broker keys rotate`, never the broker itself.
#
# Give the operator's token this policy AND capbroker-policy.hcl: rotate makes a new key
# version, then reads the key to report the new kid. Older versions stay published (and
# verifying) until an operator raises min_decryption_version, which this policy does not
# allow either.
path "transit/keys/capbroker/rotate" {
  capabilities = ["update"]
}
