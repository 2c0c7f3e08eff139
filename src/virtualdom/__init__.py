"""virtualdom: a CRDT collaborative-editing engine for BSON documents and its gRPC gateway.

The engine lives in :mod:`virtualdom.engine` (folder ``engine/``); it is a pure library that does
no I/O.
"""

__version__ = "0.1.0"
