"""Time-boxed atheris run of every parser's fuzz target (``fuzz/run.py``), as CI runs it.

``CRM_FUZZ_SECONDS`` (default 3) per target; ``make fuzz`` runs them longer. Skipped, with the reason,
only when atheris cannot be imported (it ships wheels for CPython on Linux x86-64).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]

try:
    import atheris  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the platform
    pytest.skip(f"atheris is not installed ({exc}); pip install atheris", allow_module_level=True)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name: str, tmp_path: Path) -> None:
    seconds = int(os.environ.get("CRM_FUZZ_SECONDS", "3"))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "run.py"),
            name,
            f"-max_total_time={seconds}",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=tmp_path,
        env={**os.environ, "CRM_FUZZ_TMP": str(tmp_path)},  # scratch files and corpus die with tmp_path
    )
    crashes = list(tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, (
        f"fuzz target {name} found a crash ({[c.name for c in crashes]}):\n{proc.stderr[-4000:]}"
    )
    assert list(tmp_path.glob(f"crm-fuzz-{name}-*")), "the seed corpus went elsewhere than CRM_FUZZ_TMP"
