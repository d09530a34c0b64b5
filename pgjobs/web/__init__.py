"""The pgjobs dashboard and HTTP JSON API (``pip install 'pgjobs[web]'``)."""

from pgjobs.web.app import create_app

__all__ = ["create_app"]
