"""Static files under `/static`, with caching headers.

Page templates link assets as `/static/<path>?v=<dockyard version>`, so a long, immutable cache is safe: an
upgrade changes every URL.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from dockyard import __version__

STATIC_DIR = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=604800, immutable"


class CachedStaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["cache-control"] = CACHE_CONTROL
            response.headers["x-content-type-options"] = "nosniff"
        return response


def static_url(path: str) -> str:
    return f"/static/{path}?v={__version__}"


def static_files() -> CachedStaticFiles:
    return CachedStaticFiles(directory=STATIC_DIR)
