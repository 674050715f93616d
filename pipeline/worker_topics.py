"""Every topic this deployment needs: one per installed channel, per routed agency and per kota."""

from __future__ import annotations

from .processors.route import load_router
from .settings import Settings
from .sources.registry import channel_ids
from .topics import TopicSpec, topic_specs


def all_topic_specs(settings: Settings) -> list[TopicSpec]:
    router = load_router()
    return topic_specs(settings, channel_ids(), router.agencies(), router.kota_codes())
