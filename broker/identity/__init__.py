"""Agent identity methods beyond static keys (README, "Agent identities"): pure matching of presented identities."""
