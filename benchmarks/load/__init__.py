"""The gateway load harness (benchmarks/README.md, "Load harness")."""
