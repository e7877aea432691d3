#!/usr/bin/env python3
"""Medians of CLI start-up costs; prints figures, asserts nothing.

    .venv/bin/python benchmarks/cli.py [--runs N] [--bin DIR]

Targets on the build machine: validate and box list <= 0.15 s; the passthrough
(`env true`) adds <= 0.05 s over coreutils' `/usr/bin/env true`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compiled

REPO = Path(__file__).resolve().parent.parent


def median_seconds(argv: list[str], runs: int, cwd: str) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            sys.exit(f"benchmark command failed ({result.returncode}): {' '.join(argv)}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--bin", default=str(Path(sys.executable).parent), help="folder holding vbox's env")
    args = parser.parse_args()
    compiled.ensure()
    env = os.path.join(args.bin, "env")
    with tempfile.TemporaryDirectory() as project:
        shutil.copy(REPO / "Envfile.example", Path(project) / "Envfile")
        rows = [
            ("env --version", [env, "--version"], None),
            ("env validate (Envfile.example)", [env, "validate"], 0.15),
            ("env box list", [env, "box", "list"], 0.15),
            ("/usr/bin/env true", ["/usr/bin/env", "true"], None),
            ("env true (passthrough)", [env, "true"], None),
        ]
        results = {}
        print(f"median of {args.runs} runs each, {env}")
        for label, argv, target in rows:
            seconds = median_seconds(argv, args.runs, project)
            results[label] = seconds
            note = f"  (target <= {target:.2f} s)" if target else ""
            print(f"  {label:34s} {seconds:7.3f} s{note}")
        added = results["env true (passthrough)"] - results["/usr/bin/env true"]
        print(f"  {'passthrough adds':34s} {added:7.3f} s  (target <= 0.05 s)")


if __name__ == "__main__":
    main()
