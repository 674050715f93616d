"""The bench's CPU monitor against real processes: a phase's CPU is what its processes used in it."""

from __future__ import annotations

import subprocess
import sys

from pipeline.bench.monitor import Monitor

_SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _spin(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _SPIN.format(s=seconds) + "time.sleep(5)"])


def test_a_process_watched_anew_under_an_old_name_counts_only_its_own_cpu() -> None:
    monitor = Monitor(interval=0.05)
    first, second = _spin(0.6), None
    try:
        monitor.watch("baseline", first.pid)
        monitor.start()
        monitor.begin("warm")
        # wait until the first process has used its CPU, so the phase's snapshot holds it
        while monitor.watched["baseline"].cpu_s < 0.5:
            monitor.sample()
        monitor.end("warm")
        monitor.begin("run")
        second = _spin(0.2)  # a new process under the same name, as each baseline run is
        monitor.watch("baseline", second.pid)
        while monitor.watched["baseline"].cpu_s < 0.15:
            monitor.sample()
        used = monitor.end("run")["baseline"]["cpu_s"]
    finally:
        monitor.stop()
        for p in (first, second):
            if p is not None:
                p.kill()
                p.wait()
    assert 0.15 <= used < 0.5, used
