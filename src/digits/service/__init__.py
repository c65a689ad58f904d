"""The HTTP service and its drawing page (needs the `serve` extra: pip install 'digits[serve]')."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
