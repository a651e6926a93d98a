"""The demo service of the default stack: it heartbeats and logs a line now and then."""

from __future__ import annotations

import time

from procorch.services.base import Service


class DemoService(Service):
    tick_interval = 5.0

    def setup(self) -> None:
        self.started = time.monotonic()
        print(f"{self.context.name}.{self.context.replica} ready", flush=True)

    def tick(self) -> None:
        print(f"alive for {time.monotonic() - self.started:.0f}s", flush=True)

    def teardown(self) -> None:
        print("stopping", flush=True)
