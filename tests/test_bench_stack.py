"""The private stack of the bench and the soak on the real servers: a start that fails because a port
was taken after the free-port check (a client's connection can hold a port of the kernel's ephemeral
range, even connected to itself) moves to the next ports instead of failing the run."""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.bench import stack
from pipeline.bench.stack import PORT_VARS, ROOT, BenchStack


async def _broker_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()


def _free_layout() -> int:
    """A port P with P..P+3 and P+10..P+13 free: the layout a failed start and its retry take."""
    for base in range(21_000, 22_900, 20):
        if all(stack._port_free(base + d) for d in (0, 1, 2, 3, 10, 11, 12, 13)):
            return base
    pytest.fail("no free ports for the test")


def test_a_port_taken_between_the_check_and_the_bind_moves_the_stack_to_the_next_ports(monkeypatch, capsys):
    # An established connection holds port P as its local port, as a client's ephemeral port would.
    taken = _free_layout()
    listener = socket.create_server(("127.0.0.1", 0))
    holder = socket.socket()
    holder.bind(("127.0.0.1", taken))
    holder.connect(listener.getsockname())
    monkeypatch.setattr(stack, "DEFAULT_PORTS", (taken, taken + 1, taken + 2, taken + 3))
    real_check = stack._port_free
    # The check ran just before the connection took the port.
    monkeypatch.setattr(stack, "_port_free", lambda p: p == taken or real_check(p))
    for var in PORT_VARS:
        monkeypatch.delenv(f"BENCH_{var}", raising=False)
    stack_dir = ROOT / ".stack" / f"test-ports-{uuid.uuid4().hex[:6]}"
    bench_stack = BenchStack(stack_dir=stack_dir)
    try:
        env = bench_stack.up()
        moved = int(bench_stack.ports["KAFKA_PORT"])
        assert moved == taken + 10  # the next set of the same layout
        assert env["CRM_KAFKA_BOOTSTRAP"].endswith(f":{moved}")
        assert asyncio.run(_broker_answers(env["CRM_KAFKA_BOOTSTRAP"]))
        err = capsys.readouterr().err
        assert f"kafka_port={taken}" in err and "attempt 2" in err, err
        assert "in use" in err  # the broker's own reason is in the log line
    finally:
        bench_stack.down()
        holder.close()
        listener.close()
        shutil.rmtree(stack_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_slot(monkeypatch):
    monkeypatch.delenv("SLOT_PORT_BASE", raising=False)


def test_the_default_ports_lie_below_the_kernels_ephemeral_range():
    """A port in that range can be taken by a client's own end, even by a connection to itself."""
    from pathlib import Path

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(stack.DEFAULT_PORTS) + 490 < low  # with every fallback offset choose_ports may try
