#!/usr/bin/env python3
"""Time a full build of the debian-12 box into a throw-away store; prints figures.

    .venv/bin/python benchmarks/box_build.py

Uses the shared debootstrap package cache, so a second run measures a build from a
warm apt cache (target: under 3 minutes on the build machine). Needs root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    vbox = Path(sys.executable).parent / "vbox"
    with tempfile.TemporaryDirectory(prefix="vbox-bench-") as home:
        started = time.perf_counter()
        subprocess.run([str(vbox), "--plain", "box", "build", "debian-12"], check=True,
                       env={**os.environ, "VBOX_HOME": home})
        built = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([str(vbox), "--plain", "box", "build", "debian-12"], check=True,
                       env={**os.environ, "VBOX_HOME": home}, stdout=subprocess.DEVNULL)
        cached = time.perf_counter() - started
    print(f"box build debian-12: {built:.1f} s (target < 180 s from a warm apt cache)")
    print(f"box build again (unchanged recipe): {cached:.2f} s")


if __name__ == "__main__":
    main()
