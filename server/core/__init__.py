"""The gateway's transport-independent core: protocol rules as plain objects and functions.

Nothing here imports grpc, protobuf, an HTTP or WebSocket library, or does I/O of its own
(tests/gateway/test_core.py checks it): the transports convert their wire messages, call the
core and convert what it gives back.

* :mod:`.lib0` — lib0's binary encoding, read strictly;
* :mod:`.ywire` — y-websocket (y-protocols) and Hocuspocus frames, encoded and decoded;
* :mod:`.sync` — what a member's sync message asks of its document (answer with step 2,
  apply, refuse a read-only member's edit, nothing to write), decided without I/O;
* :mod:`.room` — the members of a document on any transport: committed changes fanned out
  (encoded once per transport) and awareness/presence.
"""
