"""bench/chaos: see bench/README.md."""
