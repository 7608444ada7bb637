"""DPoP (RFC 9449): proof-of-possession proofs, checked purely (no clock, no I/O)."""
