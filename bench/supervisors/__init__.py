"""bench/supervisors: see bench/README.md."""
