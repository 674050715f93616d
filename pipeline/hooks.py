"""Plug-in point for wrapping the worker's triage chain: the entry-point group ``crm_pipeline.triage_hooks``.

A hook is ``hook(chain, settings) -> chain``; the worker applies every installed one, by name, when it
builds its chain. The package itself registers none, so the production path imports no test code. The
fault-injection suite registers its poison hook from ``tests/chaos/plugins`` (a directory only the
processes it starts have on their ``PYTHONPATH``). A production worker refuses to start with any hook
installed: they exist to break things on purpose.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .settings import Settings

TRIAGE_HOOKS = "crm_pipeline.triage_hooks"


class HookError(RuntimeError):
    pass


def wrap_triage_chain(chain: Any, settings: Settings) -> Any:
    """The chain wrapped by every installed triage hook (the chain itself when none is installed)."""
    for ep in sorted(entry_points(group=TRIAGE_HOOKS), key=lambda e: e.name):
        if settings.env == "production":
            raise HookError(
                f"triage hook {ep.name!r} ({ep.value}) is installed: hooks are for tests, "
                "production refuses to start with one"
            )
        chain = ep.load()(chain, settings)
    return chain
