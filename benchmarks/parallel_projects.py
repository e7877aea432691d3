#!/usr/bin/env python3
"""Many projects at once: N project folders, each looping `env up`, a check over SSH and
`env destroy -f`, all in parallel, for a while. Prints what ran, what failed, how long the
commands took, and the processes and open file descriptors of libvirtd, virtlogd, LXC's
monitors and dnsmasq before and after.

    .venv/bin/python benchmarks/parallel_projects.py [--projects 8] [--seconds 180]

The loops are tests/integration/parallel_projects.py's (test_parallel_projects.py runs
them shorter and asserts). Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.parallel_projects import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vbox-bench-parallel-") as tmp:
        run(args.projects, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()
