"""bench/jobs: see bench/README.md."""
