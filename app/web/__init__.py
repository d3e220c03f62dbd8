"""The web client at /app: static assets built from clients/js/web and shipped in the
package (app/web/static), so `msgsync serve` serves it on a machine with only Python."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["install"]

_STATIC = files("app.web").joinpath("static")
# The client talks to this server only and runs no inline code: the browser may load
# nothing else, which also keeps an injected message body from ever running as script.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# On every answer under /app: no content-type guessing (a file is only what it says it is),
# and no Referer to anywhere (the page's URL is nobody else's business).
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _ClientFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        # index.html names its assets without a content hash: revalidate, so an upgraded
        # server is never paired with a stale cached bundle.
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        # A person who types the server's address gets the messenger.
        return RedirectResponse("app/", status_code=307, headers=_HEADERS)

    @app.get("/app", include_in_schema=False)
    async def app_root() -> RedirectResponse:
        # Relative asset URLs in index.html resolve under /app/ only with the slash.
        return RedirectResponse("/app/", status_code=308, headers=_HEADERS)

    # Installed packages are plain files, so the resource is a real directory.
    app.mount("/app/", _ClientFiles(directory=str(_STATIC), html=True), name="web-client")
