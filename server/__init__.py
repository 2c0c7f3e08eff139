"""The MemoryGateway gRPC server."""
