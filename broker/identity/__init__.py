"""Agent identity methods beyond static keys (SPEC 2.2): pure matching of presented identities."""
