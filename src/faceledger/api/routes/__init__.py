"""The HTTP routes, one router per area. ``ROUTERS`` is what ``create_app`` includes; another front end
(or an extension) adds its own with ``app.include_router``."""

from faceledger.api.routes import audit, collections, faces, search, service, streams, subjects

ROUTERS = (service.router, faces.router, collections.router, subjects.router, search.router, audit.router,
           streams.router)

__all__ = ["ROUTERS"]
