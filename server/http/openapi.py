"""The OpenAPI 3.1 document of the REST routes (:mod:`.rest`), served at ``/openapi.json``.

The document is the file ``openapi.json`` beside this module, written by hand rather than
generated from the handlers: the routes match raw paths and take two body types, which a
generator from signatures would not describe, and the file is the contract
(``tests/gateway/test_rest.py`` validates it with openapi-spec-validator and checks that it names
exactly the routes served).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["document", "openapi_endpoint"]

FILE = Path(__file__).with_name("openapi.json")


@functools.cache
def _text() -> str:
    return FILE.read_text(encoding="utf-8")


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_text())
    return doc


async def openapi_endpoint(request: Request) -> Response:
    return Response(_text(), media_type="application/json")
