from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import harness


@pytest.fixture(scope="session")
def stack() -> Iterator[None]:
    """The real local stack; started here (and stopped after) only if it was not already running."""
    started = False
    if not harness.stack_up():
        harness.start_stack()
        started = True
    yield
    if started:
        harness.stop_stack()


@pytest.fixture(scope="session")
def iso(stack: None) -> Iterator[harness.Isolated]:
    space = harness.Isolated()
    space.create_database()
    yield space
    space.drop_database()


@pytest.fixture(scope="session")
def pipeline_url(iso: harness.Isolated) -> Iterator[str]:
    with harness.running_pipeline(iso) as url:
        yield url
