"""Delegation: narrowing a capability token for a sub-agent (token exchange), decided purely."""
