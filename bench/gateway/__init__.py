"""bench/gateway: see bench/README.md."""
