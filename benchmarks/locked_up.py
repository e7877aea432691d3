#!/usr/bin/env python3
"""`env up --locked` of a 3-machine LXC project from cached boxes (provisioning included),
and what the lock check itself costs (reading Envfile.lock, hashing every step and the
files it reads, comparing).

    .venv/bin/python benchmarks/locked_up.py [--runs 3]

Needs root and the debian-12 box; the project lives in a temporary folder and its machines
are destroyed after each run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
VBOX = str(Path(sys.executable).parent / "vbox")
ENVFILE = """\
[defaults]
box = "debian-12"
provider = "lxc"
folders = []

[machines.web]
provision = [{ shell = "echo web > /tmp/role" }, { script = "scripts/setup.sh", args = ["web"] }]

[machines.db]
provision = [{ file = "conf/db.conf", to = "/etc/db.conf" }, { script = "scripts/setup.sh", args = ["db"] }]

[machines.cache]
provision = [{ script = "scripts/setup.sh", args = ["cache"] }]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from boxes.store import BoxStore
    from vbox_cli import lockfile
    from vbox_cli.envfile.load import load
    from vbox_cli.machines import Session
    from vbox_cli.machines.boxes import boxes_for
    from vbox_cli.project import Project

    if BoxStore().find("debian-12") is None:
        sys.exit("no debian-12 box: run `env box build debian-12` first")
    with tempfile.TemporaryDirectory(prefix="vbox-bench-locked-") as tmp:
        folder = Path(tmp) / "project"
        (folder / "scripts").mkdir(parents=True)
        (folder / "conf").mkdir()
        (folder / "scripts/setup.sh").write_text("#!/bin/sh\necho \"set up as $1\" > /tmp/setup\n")
        (folder / "conf/db.conf").write_text("port = 5432\n" * 100)
        (folder / "Envfile").write_text(ENVFILE)
        subprocess.run([VBOX, "--plain", "lock"], cwd=folder, check=True, capture_output=True)
        seconds = []
        try:
            for _ in range(args.runs):
                started = time.perf_counter()
                subprocess.run([VBOX, "--plain", "up", "--locked"], cwd=folder, check=True, capture_output=True)
                seconds.append(time.perf_counter() - started)
                subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, check=True, capture_output=True)
        finally:
            subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)
        loaded = load(folder / "Envfile")
        session = Session(Project.at(folder), loaded)
        names = list(loaded.machines)
        boxes = boxes_for(session, names)
        checks = []
        for _ in range(200):
            started = time.perf_counter()
            locked = lockfile.read(lockfile.path_of(loaded.path))
            assert not lockfile.differences(locked, lockfile.compute(loaded, boxes, names), names, names)
            checks.append(time.perf_counter() - started)
        print(f"env up --locked, 3 LXC machines, 5 steps: median {statistics.median(seconds):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})")
        print(f"lock check (read, hash steps and files, compare): median {statistics.median(checks) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
