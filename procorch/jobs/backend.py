"""Which store a config names: SQLite in the run directory, or Redis.

The one place that knows both implementations, so neither they nor their interface
(`store.py`) import each other; each driver is imported only when it is chosen.
"""

from __future__ import annotations

from pathlib import Path

from procorch.config import JobsSettings
from procorch.jobs.store import Store


def open_store(settings: JobsSettings, run_dir: Path) -> Store:
    """The store the settings name; imports its driver only now."""
    if settings.redis_url is not None:
        from procorch.jobs.redis_store import RedisStore

        return RedisStore(settings, run_dir)
    from procorch.jobs.sqlite_store import SQLiteStore

    return SQLiteStore(settings, run_dir)
