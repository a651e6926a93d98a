"""bench/services: see bench/README.md."""
