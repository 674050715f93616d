"""The metrics handle of a channel adapter: Prometheus counters that carry the adapter's channel label.

An adapter counts what only it knows (webhook items that are not reports, media it could not resolve,
…) through ``self.metrics``, and the counts appear on the process's ``/metrics`` beside the ingress's
own, labelled ``channel="<id>"``::

    self.metrics.ignored(2, reason="status")            # crm_channel_ignored_total{channel, reason}
    self.metrics.count("media_lookups", outcome="ok")    # crm_channel_media_lookups_total{channel, outcome}

A counter is created on first use and shared by every adapter that uses the same name (so two Meta
channels, or an adapter built twice, count into one metric); its label names are fixed by that first
use, and a later use with other label names is a bug (ValueError), as Prometheus requires.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import Counter

__all__ = ["ChannelMetrics", "channel_counter"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,60}$")
_COUNTERS: dict[str, tuple[Counter, tuple[str, ...]]] = {}
_LOCK = threading.Lock()


def channel_counter(name: str, labels: tuple[str, ...], documentation: str | None = None) -> Counter:
    """The counter ``crm_channel_<name>_total`` with labels ``channel`` + ``labels`` (created once)."""
    if not _NAME.match(name) or name.endswith("_total"):
        raise ValueError(f"metric name {name!r}: lower-case letters, digits and _ (without _total)")
    bad = [label for label in labels if not _NAME.match(label) or label == "channel"]
    if bad:
        raise ValueError(f"metric {name!r}: bad label name(s) {bad}")
    with _LOCK:
        found = _COUNTERS.get(name)
        if found is None:
            counter = Counter(
                f"crm_channel_{name}",
                documentation or f"{name.replace('_', ' ')} per channel (counted by the channel adapter)",
                ["channel", *labels],
            )
            _COUNTERS[name] = (counter, labels)
            return counter
        counter, known = found
        if known != labels:
            raise ValueError(f"metric crm_channel_{name}_total has labels {list(known)}, not {list(labels)}")
        return counter


class ChannelMetrics:
    """``adapter.metrics``: counters of one channel."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def count(self, name: str, n: float = 1, **labels: str) -> None:
        """Add ``n`` to ``crm_channel_<name>_total{channel, **labels}``."""
        if n < 0:
            raise ValueError("a counter only goes up")
        keys = tuple(sorted(labels))
        channel_counter(name, keys).labels(self.channel, *(str(labels[k]) for k in keys)).inc(n)

    def ignored(self, n: float = 1, reason: str = "not_a_report") -> None:
        """Items the provider sent that are not reports (receipts, reactions, edits, echoes, …)."""
        if n:
            self.count("ignored", n, reason=reason)

    def value(self, name: str, **labels: str) -> float:
        """The current count (for tests and the adapter's own answers)."""
        keys = tuple(sorted(labels))
        found = _COUNTERS.get(name)
        if found is None:
            return 0.0
        sample = found[0].labels(self.channel, *(str(labels[k]) for k in keys))
        return float(sample._value.get())
