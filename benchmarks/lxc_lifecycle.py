#!/usr/bin/env python3
"""LXC machine life-cycle timings from a cached box; prints figures, asserts nothing.

    .venv/bin/python benchmarks/lxc_lifecycle.py [--runs N]

Targets on the build machine: status <= 0.15 s; ssh -- true <= 0.4 s; up (create)
<= 2 s; up from halted <= 1.5 s; halt <= 1.5 s; destroy <= 1 s; a fresh machine
<= 5 MB of disk; 10 machines <= 12 s. Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
ONE = '[machines.web]\nprovision = [{ shell = "true" }]\n'
TEN = "".join(f"[machines.m{i}]\n" for i in range(10))


def timed(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([VBOX, "--plain", *args], cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"vbox {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return seconds


def disk_used(folder: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(folder)], capture_output=True, text=True).stdout.split()[0]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {k: [] for k in
                                       ("up (create)", "status", "ssh -- true", "provision", "halt",
                                        "up (from halted)", "destroy")}
    disk = []
    with tempfile.TemporaryDirectory(prefix="vbox-bench-") as tmp:
        folder = Path(tmp)
        (folder / "Envfile").write_text(ONE)
        from vbox_cli.project import project_id

        container = Path("/var/lib/vbox/lxc") / f"vbox-{project_id(folder)}-web"
        for _ in range(args.runs):
            figures["up (create)"].append(timed(folder, "up"))
            disk.append(disk_used(container))
            figures["status"].append(timed(folder, "status"))
            figures["ssh -- true"].append(timed(folder, "ssh", "web", "--", "true"))
            figures["provision"].append(timed(folder, "provision", "--force"))
            figures["halt"].append(timed(folder, "halt"))
            figures["up (from halted)"].append(timed(folder, "up"))
            figures["destroy"].append(timed(folder, "destroy", "-f"))
        (folder / "Envfile").write_text(TEN)
        ten = timed(folder, "up")
        timed(folder, "destroy", "-f")
    print(f"LXC machine life cycle, median of {args.runs} runs (one machine, one trivial step)")
    for label, values in figures.items():
        print(f"  {label:20s} {statistics.median(values):6.2f} s")
    print(f"  {'fresh machine disk':20s} {statistics.median(disk) / 1024**2:6.1f} MB")
    print(f"  {'up of 10 machines':20s} {ten:6.2f} s")


if __name__ == "__main__":
    main()
