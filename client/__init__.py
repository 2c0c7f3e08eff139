"""An async Python client for the MemoryGateway."""
