"""The HTTP read API (and, later, the live UI) over a store."""

from dashfrog.web._app import create_app
from dashfrog.web._auth import Authenticator, Principal

__all__ = ["Authenticator", "Principal", "create_app"]
