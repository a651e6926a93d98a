"""Services that procorch runs: the base class for Python services and the built-in ones."""

from procorch.services.base import Service

__all__ = ["Service"]
