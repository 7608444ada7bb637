"""The thin HTTP layer: parse, call a use case, translate. ``create_app`` builds it."""

from broker.http.app import create_app

__all__ = ["create_app"]
