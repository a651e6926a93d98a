"""bench/harness: see bench/README.md."""
