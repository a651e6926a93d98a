"""`python -m procorch` is the `procorch` command."""

from procorch.cli import main

main()
