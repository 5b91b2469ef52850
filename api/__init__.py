"""The HTTP API: `create_app()` builds the FastAPI application (see api/main.py)."""

from api.main import create_app

__all__ = ["create_app"]
