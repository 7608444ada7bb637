"""Real OpenBao and Redis servers for the integration tests, on free loopback ports."""
