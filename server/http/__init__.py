"""The gateway's HTTP routes beside the WebSocket endpoints: REST/JSON (:mod:`.rest`, described
by :mod:`.openapi`) and the editor page (:mod:`.page`, assets built from ``web/`` into
``static/``). Each handler converts the request, calls the same operations as the gRPC handlers
(:mod:`virtualdom.server.operations`), and converts the result."""
