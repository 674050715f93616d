"""The processes a bench run starts (each with its log beside the results) and the windows of
reports it sends, shared by the runner and the rivals (:mod:`.rivals`)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .stack import ROOT


class Proc:
    """A pipeline process (``python -m pipeline …``) with its log in the results' log folder."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], logdir: Path, module: str = "pipeline"
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Window:
    name: str
    t0: datetime
    t1: datetime | None = None
    sent: int = 0
    unique: set[str] = field(default_factory=set)
