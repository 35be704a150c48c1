"""The HTTP read API, its live stream and the web UI over a store."""

from dashfrog.web._app import create_app
from dashfrog.web._auth import Authenticator, Principal

__all__ = ["Authenticator", "Principal", "create_app"]
