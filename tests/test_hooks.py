"""The worker's triage-hook plug-in point (pipeline/hooks.py) and the chaos suite's poison hook."""

from __future__ import annotations

import pytest

from pipeline.envelope import Report, Reporter
from pipeline.hooks import HookError, wrap_triage_chain
from pipeline.settings import Settings
from tests.chaos.chaoslib import PLUGINS


class _Chain:
    def process(self, reports):
        return list(reports)


def _report(text: str, n: int) -> Report:
    return Report.create(channel="web", provider_id=f"hook-{n}", reporter=Reporter(id="anonymous"), text=text)


def test_no_hook_is_installed_with_the_package():
    chain = _Chain()
    assert wrap_triage_chain(chain, Settings(env="test", chaos_poison_marker="<<x>>")) is chain


def test_the_chaos_plugin_poisons_only_marked_reports(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(PLUGINS))  # what chaoslib does for the processes it starts
    chain = _Chain()
    assert wrap_triage_chain(chain, Settings(env="test")) is chain  # no marker: left alone
    poisoned = wrap_triage_chain(chain, Settings(env="test", chaos_poison_marker="<<x>>"))
    ok = _report("lampu mati di Jl. Pramuka", 1)
    assert poisoned.process([ok]) == [ok]
    with pytest.raises(RuntimeError, match="chaos poison marker"):
        poisoned.process([ok, _report("lampu mati <<x>>", 2)])


def test_a_production_worker_refuses_an_installed_hook(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    prod = Settings.model_construct(env="production", chaos_poison_marker=None)
    with pytest.raises(HookError, match="chaos_poison"):
        wrap_triage_chain(_Chain(), prod)
