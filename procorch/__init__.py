"""procorch: run a set of services on one machine and keep them alive."""

__version__ = "0.1.0"
