from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos import chaoslib


@pytest.fixture(scope="session")
def private_stack() -> Iterator[chaoslib.PrivateStack]:
    """The suite's own Kafka/Redis/PostgreSQL (other ports, .stack/chaos): scenarios may break it."""
    stack = chaoslib.PrivateStack()
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def cluster(private_stack: chaoslib.PrivateStack) -> Iterator[chaoslib.Cluster]:
    """Three KRaft nodes on loopback (.stack/cluster), for the broker-loss scenario (jars: private_stack)."""
    c = chaoslib.Cluster()
    c.start()
    yield c
    c.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not chaoslib.REPORTS:
        return
    terminalreporter.section("fault-injection reconciliation")
    for outcome in chaoslib.REPORTS:
        terminalreporter.write_line(outcome.table())
