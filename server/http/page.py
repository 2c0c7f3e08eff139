"""The collaborative editor page at ``/``: assets built by ``python scripts/build_web.py`` from
``web/`` into ``static/`` (package data), so a gateway serves it without Node at run time."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "page_routes"]

STATIC = Path(__file__).parent / "static"


async def _index(request: Request) -> Response:
    index = STATIC / "index.html"
    if not index.is_file():  # a checkout whose assets were never built
        return PlainTextResponse(
            "the editor page is not built: run python scripts/build_web.py", status_code=503
        )
    # The page is small and changes with each release of the gateway: always revalidated.
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", _index, methods=["GET", "HEAD"]),
        # follow_symlink: an editable install (editable_mode=strict) links each file from a
        # tree under build/ to the repository; the directory holds only the built assets.
        Mount(
            "/assets",
            StaticFiles(directory=STATIC / "assets", check_dir=False, follow_symlink=True),
            name="assets",
        ),
    ]
