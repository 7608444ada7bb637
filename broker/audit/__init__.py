"""The audit trail: events sealed into a SHA-256 hash chain (pure), and their recorder."""
