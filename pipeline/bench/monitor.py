"""CPU and peak memory of every process of the run, sampled with psutil in a background thread.

Peak memory: the kernel's high-water mark (``VmHWM``) for single processes (Python, Java, Redis); for
PostgreSQL, whose backends share memory, the peak of the summed proportional set size (PSS) of the
postmaster and its backends. CPU: seconds of user+system time per phase and the mean percentage of
one core over the phase.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


def _hwm_mb(p: psutil.Process) -> float:
    try:
        with open(f"/proc/{p.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return p.memory_info().rss / 2**20


@dataclass
class Watched:
    name: str
    proc: psutil.Process
    with_children: bool = False
    peak_mb: float = 0.0
    cpu_s: float = 0.0  # last sample of cumulative CPU seconds (incl. exited children seen before)
    alive: bool = True
    _children_cpu: dict[int, float] = field(default_factory=dict)

    def sample(self) -> None:
        try:
            procs = [self.proc]
            if self.with_children:
                procs += self.proc.children(recursive=True)
            cpu = 0.0
            if self.with_children:
                mem = 0.0
                for p in procs:
                    try:
                        t = p.cpu_times()
                        self._children_cpu[p.pid] = t.user + t.system
                        mem += p.memory_full_info().pss / 2**20
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                cpu = sum(self._children_cpu.values())
                self.peak_mb = max(self.peak_mb, mem)
            else:
                t = self.proc.cpu_times()
                cpu = t.user + t.system
                self.peak_mb = max(self.peak_mb, _hwm_mb(self.proc))
            self.cpu_s = max(self.cpu_s, cpu)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self.alive = False


class Monitor:
    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.watched: dict[str, Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self.phases: dict[str, dict[str, dict[str, float]]] = {}
        self._phase_start: dict[str, tuple[float, dict[str, tuple[Watched, float]]]] = {}

    def watch(self, name: str, pid: int, with_children: bool = False) -> None:
        try:
            w = Watched(name, psutil.Process(pid), with_children)
        except psutil.NoSuchProcess:
            return
        w.sample()
        with self._lock:
            self.watched[name] = w

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for w in list(self.watched.values()):
                if w.alive:
                    w.sample()

    def begin(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self._phase_start[phase] = (time.monotonic(), {n: (w, w.cpu_s) for n, w in self.watched.items()})

    def end(self, phase: str) -> dict[str, dict[str, float]]:
        self.sample()
        t0, cpu0 = self._phase_start.pop(phase)
        wall = max(time.monotonic() - t0, 1e-9)
        out = {}
        with self._lock:
            for n, w in self.watched.items():
                # A name watched anew since the phase began is a new process: all its CPU is this phase's.
                before, cpu_before = cpu0.get(n, (w, 0.0))
                used = w.cpu_s - (cpu_before if before is w else 0.0)
                out[n] = {"cpu_s": round(used, 2), "cpu_pct": round(100 * used / wall, 1)}
        self.phases[phase] = out
        return out

    def peaks(self) -> dict[str, float]:
        self.sample()
        with self._lock:
            return {n: round(w.peak_mb, 1) for n, w in self.watched.items()}
