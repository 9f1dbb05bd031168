"""The interactive docs, served from the installed packages: nothing is loaded from a CDN, so /docs and /redoc
work on a machine without internet access.

Swagger UI and ReDoc come from the PyPI package ``fastapi-offline`` (MIT; it bundles Swagger UI, Apache-2.0,
and ReDoc, MIT), whose files are served as they are under ``ASSETS``; only its static folder is used.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from faceledger.errors import ConfigurationError

DOCS, REDOC, ASSETS = "/docs", "/redoc", "/docs/assets"
# the online validator badge would load an image from validator.swagger.io: off
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True, "displayRequestDuration": True}


def assets_dir() -> Path:
    """The folder of swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    spec = find_spec("fastapi_offline")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" if spec and spec.submodule_search_locations \
        else None
    if folder is None or not (folder / "swagger-ui-bundle.js").is_file():
        raise ConfigurationError("the package 'fastapi-offline' that serves the API docs is not installed "
                                 "(pip install fastapi-offline)", package="fastapi-offline")
    return folder


def install(app: FastAPI) -> None:
    """Serve Swagger UI at ``DOCS`` and ReDoc at ``REDOC`` with their assets from the package (create the app
    with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
                                   swagger_ui_parameters={**SWAGGER_PARAMETERS, **(app.swagger_ui_parameters or {})})

    @app.get(REDOC, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)
