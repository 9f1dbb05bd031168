"""The web console at ``/console``: server-rendered pages (Jinja2, htmx 2 vendored) for the people who run and
oversee faceledger. Every action is an operation of the operations layer under the signed-in key's actor."""

from faceledger.api.console.pages import router, static

__all__ = ["router", "static"]
