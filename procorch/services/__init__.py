"""Services that procorch runs: the base class for Python services and the built-in ones."""

from procorch.services.base import Service, action
from procorch.services.protocol import Conflict, Invalid, NotFound, ServiceError, Unavailable

__all__ = ["Conflict", "Invalid", "NotFound", "Service", "ServiceError", "Unavailable", "action"]
