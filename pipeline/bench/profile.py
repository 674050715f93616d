"""Sampling profile of a running worker with py-spy, summarised as top self and inclusive frames."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: int, out: Path) -> subprocess.Popen | None:
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "100",
            "--nonblocking",
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _frame(f: str) -> str:
    # "triage_batch (pipeline/worker.py:152)" → "triage_batch (pipeline/worker.py)"; shorten site-packages.
    f = _LINE.sub(")", f.strip())
    f = re.sub(r"\(/.*?/site-packages/", "(", f)
    return re.sub(r"\(/work/main/|\(/.*?/crm-pipeline/", "(", f)


def summarise(raw: Path, top: int = 25) -> dict:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        # The first frame is the thread ("process 123:..." / "thread (0x..)"): not a Python frame.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: Counter[str]) -> list[list]:
        return [[f, round(100 * n / total, 1)] for f, n in c.most_common(top)] if total else []

    return {"samples": total, "top_self": pct(self_c), "top_inclusive": pct(incl), "raw": str(raw)}
