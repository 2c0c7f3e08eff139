"""The gateway's transport-independent core: protocol rules as plain objects and functions.

Nothing here imports grpc, protobuf, an HTTP or WebSocket library, or does I/O of its own
(tests/gateway/test_core.py checks it): the transports convert their wire messages, call the
core and convert what it gives back.

* :mod:`.lib0` — lib0's binary encoding, read strictly;
* :mod:`.ywire` — y-websocket (y-protocols) and Hocuspocus frames, encoded and decoded;
* :mod:`.room` — the members of a document on any transport: committed changes fanned out
  (encoded once per transport) and awareness/presence.
"""
