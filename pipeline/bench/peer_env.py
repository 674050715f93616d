"""The bench-only ``bench`` extra (Quix Streams) in a directory of its own, first on the peer's path.

quixstreams pins pydantic and pydantic-settings below the versions the pipeline resolves to, so
installing it into ``.venv`` would change what the product and its tests run on. ``pip install
--target`` puts it and its dependencies in ``.venv/bench-peer``; only the peer process puts that
directory first on ``PYTHONPATH`` (everything else still comes from ``.venv``). Installed once per
version of the extra, by the first ``make bench`` that runs the peer.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

from .stack import ROOT, log

TARGET = Path(sys.prefix) / "bench-peer"


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return list(data["project"]["optional-dependencies"]["bench"])


def ensure(target: Path = TARGET) -> Path | None:
    """The directory to put first on the peer's path (installing it if needed), or None if pip failed."""
    reqs = requirements()
    stamp = target / f".installed-{hashlib.sha256(' '.join(reqs).encode()).hexdigest()[:16]}"
    if stamp.is_file():
        return target
    log(f"installing the bench extra ({', '.join(reqs)}) into {target} for the Quix Streams peer")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--target", str(target), *reqs],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        log(f"pip could not install {reqs}: {res.stderr[-1500:]}")
        return None
    for old in target.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return target
