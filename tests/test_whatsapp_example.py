"""The WhatsApp example checks itself: its own test suite (the core's conformance kit, both halves) runs
as a channel owner runs it, against a real pipeline with the package installed.

The package is installed the way ``pip install`` would (its entry points in a dist-info folder on
``PYTHONPATH``), an ingress and a worker run with it, and ``pytest examples/whatsapp_channel/tests``
gets the ingress, the broker and a migrated store through the variables its ``conftest.py`` documents:
every promise must pass, none may be skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.channel_probe import plugin_site

pytestmark = pytest.mark.stack

EXAMPLE = harness.ROOT / "examples" / "whatsapp_channel"


@pytest.fixture
def own_space(stack: None) -> Iterator[harness.Isolated]:
    """A namespace of its own: the worker here consumes the whatsapp topic, the session's does not."""
    space = harness.Isolated()
    space.create_database()
    yield space
    space.drop_database()


def test_the_whatsapp_example_passes_its_own_suite_offline_and_online(own_space, tmp_path: Path) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = plugin_site(tmp_path / "site", project["name"], project["version"], project["entry-points"])
    path = os.pathsep.join([str(site), str(EXAMPLE)])
    with harness.running_pipeline(own_space, env={"PYTHONPATH": path}) as url:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
            env={
                **os.environ,
                **own_space.env,
                "PYTHONPATH": path,
                "CRM_CONFORMANCE_INGRESS_URL": url,
                "CRM_CONFORMANCE_DATABASE_URL": own_space.env["CRM_DATABASE_URL"],
            },
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "skipped" not in summary and "passed" in summary, done.stdout[-3000:]
    passed = {line.split("::")[-1].split()[0] for line in done.stdout.splitlines() if " PASSED" in line}
    assert passed >= {
        "test_conformance_offline",
        "test_conformance_settings_declared",
        "test_conformance_valid_input_lands_on_ingest_topic",
        "test_conformance_malformed_input_is_dead_lettered",
        "test_conformance_redelivery_is_not_duplicated",
        "test_conformance_forged_request_is_rejected",
        "test_reply_settings_declared",
        "test_reply_registered_as_entry_point",
        "test_reply_once_per_reporter_and_step",
        "test_reply_failing_provider_is_retried_then_undelivered",
    }, done.stdout[-3000:]
