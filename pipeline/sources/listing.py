"""``crm-pipeline channels [--config] [--json]``: what is installed, and with ``--config`` how it is set.

With ``--config`` every channel's declared settings are listed (its adapter's and, when the channel
answers back, its reply sender's): variable, type, value, whether it is the default, with every secret
masked. A setting that does not validate, or a development secret under ``CRM_ENV=production``, is
reported on its channel and the command exits 1, so a deployment can be checked before it starts.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from ..topics import Topics
from .config import ChannelSettings, ChannelSettingsError
from .registry import discover


def _declared(model: type[ChannelSettings] | None, core: Settings) -> dict[str, Any]:
    if model is None:
        return {"model": None, "settings": [], "problem": None}
    name = f"{model.__module__}.{model.__qualname__}"
    try:
        loaded = model.read(core)
    except ChannelSettingsError as exc:
        return {"model": name, "settings": [], "problem": str(exc)}
    try:
        loaded.check(core)
        problem = None
    except ChannelSettingsError as exc:
        problem = str(exc)
    return {"model": name, "settings": loaded.listing(), "problem": problem}


def channel_rows(core: Settings, config: bool = False) -> list[dict[str, Any]]:
    topics = Topics(core.topic_namespace)
    replies: dict[str, Any] = {}
    if config:
        from ..crm.notify.replies import discover_replies

        replies = discover_replies()
    rows = []
    for cls in discover().values():
        row: dict[str, Any] = {
            "id": cls.channel,
            "mode": cls.mode,
            "topic": topics.ingest(cls.channel),
            "adapter": f"{cls.__module__}.{cls.__name__}",
        }
        if config:
            row["config"] = _declared(getattr(cls, "settings_model", None), core)
            sender = replies.get(cls.channel)
            row["reply_sender"] = f"{sender.__module__}.{sender.__name__}" if sender else None
            row["reply_config"] = _declared(sender.settings_model if sender else None, core)
        rows.append(row)
    return rows


def print_config(rows: list[dict[str, Any]]) -> None:
    """The human listing (a problem is shown under its channel)."""
    for row in rows:
        print(f"{row['id']}  ({row['mode']}, {row['topic']})")
        parts = [("adapter", row["config"])]
        if row.get("reply_sender"):
            parts.append(("reply sender", row["reply_config"]))
        for what, declared in parts:
            if declared["model"] is None:
                print(f"  {what}: no settings of its own")
                continue
            print(f"  {what}: {declared['model']}")
            for s in declared["settings"]:
                value = "" if s["value"] is None else s["value"]
                flag = "default" if s["is_default"] else "set"
                print(f"    {s['setting']:34} {s['type']:10} {flag:7} {value}")
            if declared["problem"]:
                print(f"    ! {declared['problem']}")
