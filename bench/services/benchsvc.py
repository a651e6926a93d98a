"""The service `services.py` benchmarks procorch with: one action that echoes its data.

procorch imports it as `benchsvc:Echo` (the stack's config sets `cwd` to bench/).
"""

from procorch.services import Service, action


class Echo(Service):
    @action("echo")
    def echo(self, data: dict) -> dict:
        return data
