"""REST/JSON for simple queries and writes (described by :mod:`.openapi` at ``/openapi.json``).

::

    GET  /v1/docs?prefix=notes/              the readable document ids under a prefix
    GET  /v1/docs/{node_id}                  {node_id, version, clock, document}; ?version=,
                                             ?path=, ?format=bson (the BSON bytes as stored)
    GET  /v1/docs/{node_id}/history          the stored changes: ?from_version=, ?limit=
    POST /v1/docs/{node_id}                  a diff as (Extended) JSON or BSON; If-Match: "<v>"
                                             is the expected version; Idempotency-Key the
                                             request id that makes a retry safe

Documents and diffs are relaxed Extended JSON. The ETag of a document is its version. A node
id may contain ``/`` (``/v1/docs/notes/1``); percent-encode it (``notes%2F1%2Fhistory``) to
read a document whose id ends in ``/history``, since a literal ``/history`` suffix selects the
history route (matching runs on the raw, still encoded, path).

Each handler converts, calls the same operation as the gRPC handler
(:class:`~..operations.Operations`), and converts; :class:`~.calls.HttpCalls` adds
authentication, the access log and the error table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from virtualdom.engine import clock_from_bson
from virtualdom.engine.diff import Path, parse_path

from ..errors import BadRequest, UnsupportedMediaType
from ..observability import CallInfo
from ..operations import Operations, WriteCall
from ..store import StoredChange
from .calls import HttpCalls, json_response, read_body
from .ejson import document_json, document_value, parse_document

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["RestApi"]

DOCS = "/v1/docs"
#: Most ids one list call returns, and its default.
MAX_LIST, DEFAULT_LIST = 10_000, 1_000
#: Most changes one history call returns, and its default.
MAX_HISTORY, DEFAULT_HISTORY = 1_000, 100
BSON_TYPE = "application/bson"


def _int_param(request: Request, name: str, default: int | None, lo: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < lo:
        raise BadRequest(f"?{name}= must be an integer >= {lo}, not {raw!r}")
    return int(raw)


def _path_param(request: Request) -> Path | None:
    raw = request.query_params.get("path")
    if not raw:
        return None
    if raw.startswith("["):  # the exact form: a JSON array of names and indexes
        try:
            return parse_path(json.loads(raw), "?path=")
        except ValueError:
            raise BadRequest("?path= starting with '[' must be a JSON array") from None
    return parse_path(raw, "?path=")


def _if_match(request: Request) -> int | None:
    """The version an ``If-Match`` header requires ("3", 3 or W/"3"; "*" or none: any)."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    tag = raw.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest(f'If-Match must be a version as the ETag gives it ("3"), not {raw!r}')
    return int(tag)


def _etag(version: int) -> str:
    return f'"{version}"'


def _time(timestamp_us: int) -> str:
    t = datetime.fromtimestamp(timestamp_us / 1e6, UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _change_json(c: StoredChange) -> dict[str, Any]:
    return {
        "version": c.version,
        "actor": c.actor,
        "time": _time(c.timestamp_us),
        "timestamp_us": c.timestamp_us,
        "clock": dict(clock_from_bson(c.clock_bson)),
        "metadata": c.metadata,
        "request_id": c.request_id,
        "diff": document_value(c.diff_bson) if c.diff_bson else None,
    }


def _node_json(node_id: bytes) -> str:
    return json.dumps(node_id.decode("utf-8"), ensure_ascii=False)


class RestApi:
    """The REST routes of one gateway."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        calls = HttpCalls(gateway)
        self._list = calls.endpoint("GET", DOCS, self.list_docs)
        self._get = calls.endpoint("GET", DOCS + "/{node_id}", self.get_doc)
        self._history = calls.endpoint("GET", DOCS + "/{node_id}/history", self.history)
        self._post = calls.endpoint("POST", DOCS + "/{node_id}", self.write)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(DOCS, self._list, methods=["GET"]),
            Route(DOCS + "/{rest:path}", self._dispatch, methods=["GET", "POST"]),
        ]

    @property
    def ops(self) -> Operations:
        service = self.gateway.service
        assert service is not None  # HttpCalls answers 503 before the gateway has started
        return service.ops

    async def _dispatch(self, request: Request) -> Response:
        # The raw path, so that an encoded "%2F" stays part of the id and "/history" does not.
        raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
        tail = raw.split(b"?", 1)[0].split(DOCS.encode() + b"/", 1)[-1]
        if request.method == "GET" and tail.endswith(b"/history"):
            request.state.node_id = unquote_to_bytes(tail[: -len(b"/history")])
            return await self._history(request)
        request.state.node_id = unquote_to_bytes(tail)
        if request.method == "POST":
            return await self._post(request)
        return await self._get(request)

    def _node(self, request: Request, call: CallInfo) -> bytes:
        node_id: bytes = request.state.node_id
        call.node_id = node_id[:256].decode("utf-8", errors="replace")
        return self.ops.node_id(node_id)

    # -- endpoints ----------------------------------------------------------------------------

    async def list_docs(self, request: Request, call: CallInfo) -> Response:
        prefix = request.query_params.get("prefix", "")
        call.prefix = prefix
        limit = _int_param(request, "limit", DEFAULT_LIST, lo=1)
        assert limit is not None
        if limit > MAX_LIST:
            raise BadRequest(f"?limit= is at most {MAX_LIST}")
        ids = await self.ops.node_ids(prefix.encode(), limit + 1)
        more = len(ids) > limit
        body = {"node_ids": [n.decode("utf-8") for n in ids[:limit]], "truncated": more}
        return json_response(body)

    async def get_doc(self, request: Request, call: CallInfo) -> Response:
        node_id = self._node(request, call)
        fmt = request.query_params.get("format", "")
        if fmt not in ("", "json", "bson"):
            raise BadRequest(f"?format= is json or bson, not {fmt!r}")
        if not fmt:
            fmt = "bson" if BSON_TYPE in request.headers.get("accept", "") else "json"
        snap = await self.ops.read(
            node_id, version=_int_param(request, "version", None), path=_path_param(request)
        )
        headers = {"ETag": _etag(snap.version)}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        if fmt == "bson":
            headers["X-Vector-Clock"] = json.dumps(snap.clock, separators=(",", ":"))
            return Response(snap.snapshot_bson, media_type=BSON_TYPE, headers=headers)
        clock = json.dumps(snap.clock, ensure_ascii=False, separators=(",", ":"))
        body = (
            f'{{"node_id":{_node_json(node_id)},"version":{snap.version},"clock":{clock},'
            f'"document":{document_json(snap.snapshot_bson)}}}\n'
        )
        return Response(body, media_type="application/json", headers=headers)

    async def history(self, request: Request, call: CallInfo) -> Response:
        node_id = self._node(request, call)
        after = _int_param(request, "from_version", 0)
        limit = _int_param(request, "limit", DEFAULT_HISTORY, lo=1)
        assert after is not None and limit is not None
        if limit > MAX_HISTORY:
            raise BadRequest(f"?limit= is at most {MAX_HISTORY}")
        rows = await self.ops.history(node_id, after, limit)
        changes = [_change_json(c) for c in rows]
        more = len(rows) == limit
        body: dict[str, Any] = {
            "node_id": node_id.decode("utf-8"),
            "changes": changes,
            # Where the next page starts (None: this page reached the latest version).
            "next_from_version": rows[-1].version if more else None,
        }
        return json_response(body)

    async def write(self, request: Request, call: CallInfo) -> Response:
        node_id = self._node(request, call)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", BSON_TYPE):
            raise UnsupportedMediaType(
                f"POST a diff as application/json (Extended JSON) or {BSON_TYPE},"
                f" not {kind or 'no content type'!r}"
            )
        body = await read_body(request, self.gateway.config.max_message_bytes)
        call.req_bytes = len(body)
        if not body:
            raise BadRequest('the body is empty: POST a diff, {"ops": [...]}')
        diff = parse_document(body, "the diff") if kind == "application/json" else body
        request_id = request.headers.get("idempotency-key", "")
        if request_id:
            call.request_id = request_id[:128]
        result = await self.ops.write(
            WriteCall(
                node_id=node_id,
                diff_bson=diff,
                request_id=request_id,
                expected_version=_if_match(request),
            )
        )
        stored = result.stored
        out: dict[str, Any] = {
            "node_id": node_id.decode("utf-8"),
            "version": result.version,
            "clock": result.clock,
            "replayed": result.replayed,
            # What the write changed, positions resolved (None: nothing changed).
            "effective_diff": (
                document_value(stored.diff_bson) if stored and stored.diff_bson else None
            ),
        }
        return json_response(out, headers={"ETag": _etag(result.version)})
