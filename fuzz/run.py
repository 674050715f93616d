"""atheris entry point: ``python fuzz/run.py TARGET [libFuzzer flags]`` (e.g. ``-max_total_time=30``).

``make fuzz`` runs every target for ``FUZZ_SECONDS`` each; tests/test_fuzz.py runs them for a few
seconds in CI. Crashes are written as ``crash-*`` files into the working directory (replay one with
``python fuzz/run.py TARGET crash-…``); the seed corpus and scratch files go to ``CRM_FUZZ_TMP`` (default:
the system's temporary directory).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["pipeline"]):
    from fuzz.targets import SCRATCH, SEEDS, TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    name = sys.argv.pop(1)
    target = TARGETS[name]
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus given: start from the seeds
        corpus = Path(tempfile.mkdtemp(prefix=f"crm-fuzz-{name}-", dir=SCRATCH))
        for i, seed in enumerate(SEEDS.get(name, [])):
            (corpus / f"seed-{i}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
