"""Swagger UI at /docs and ReDoc at /redoc, with every asset served by msgsync itself."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install"]

# Swagger UI's and ReDoc's bundles come from the fastapi-offline package (pinned in uv.lock,
# upgraded like any dependency), not from a CDN: the pages must render on a machine with no
# internet, and the service must not make its users' browsers call third parties.
ASSETS_PATH = "/docs-assets"
_ASSETS = files("fastapi_offline").joinpath("static")
# ReDoc's sidebar draws its vendor's logo from the vendor's CDN, with no option to turn it
# off: the bundle is served with that address swapped for an empty inline image, so the
# browser neither asks a third party nor reports a blocked request.
_REDOC = "redoc.standalone.js"
_REDOC_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
_NO_LOGO = b"src:\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E\""
# The pages' own policy: the browser fetches nothing but this server's assets and document
# (the test suite checks that no request leaves for another host). Inline
# script and style: both pages start their bundle from an inline script; ReDoc's search
# runs in a blob: worker; Swagger UI draws its icons from data: URLs.
_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets; create the app with docs_url=redoc_url=None."""
    redoc_bundle = _ASSETS.joinpath(_REDOC).read_bytes().replace(_REDOC_LOGO, _NO_LOGO)

    # Before the mount, which would otherwise answer for this path.
    @app.get(f"{ASSETS_PATH}/{_REDOC}", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle, media_type="text/javascript; charset=utf-8")

    # Installed packages are plain files, so the resource is a real directory.
    app.mount(ASSETS_PATH, StaticFiles(directory=str(_ASSETS)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            # No validator badge: Swagger UI would send the document to its public validator.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = _POLICY
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            # ReDoc's default pulls Montserrat and Roboto from Google: the system fonts do.
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _POLICY
        return page
