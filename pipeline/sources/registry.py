"""Adapter discovery through the ``crm_pipeline.sources`` entry-point group.

Built-in channels register themselves in this package's ``pyproject.toml``; a separate package adds a
channel by declaring an entry point in the same group, with no change to the core.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import entry_points

from .base import SourceAdapter

GROUP = "crm_pipeline.sources"
log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def discover() -> dict[str, type[SourceAdapter]]:
    """Every installed adapter by channel id. Two adapters claiming one id is a deployment error."""
    found: dict[str, type[SourceAdapter]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, SourceAdapter)):
            raise RegistryError(f"entry point {ep.name!r} ({ep.value}) is not a SourceAdapter subclass")
        if cls.channel != ep.name:
            raise RegistryError(f"entry point {ep.name!r} names an adapter for channel {cls.channel!r}")
        if cls.channel in found:
            raise RegistryError(f"two adapters claim channel {cls.channel!r}")
        found[cls.channel] = cls
    return found


def channel_ids() -> list[str]:
    return sorted(discover())
