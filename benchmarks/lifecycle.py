#!/usr/bin/env python3
"""Machine life-cycle timings from a cached box; prints figures, asserts nothing.

    .venv/bin/python benchmarks/lifecycle.py [--runs N] [--provider lxc|kvm]

`ssh -- true` is the first `env ssh` after `up` (it opens the machine's shared
connection); `ssh again` the median of the five after it (the fast path, through it).

Targets on the build machine, LXC: status <= 0.15 s; ssh -- true <= 0.4 s; ssh again
<= 0.05 s; up (create) <= 2 s; up from halted <= 1.5 s; halt <= 1.5 s; destroy <= 1 s;
a fresh machine <= 5 MB of disk; 10 machines <= 12 s. KVM under TCG: up (create) <= 28 s; up
from halted <= 25 s; halt <= 5 s; destroy <= 2 s; a fresh overlay <= 10 MB.
Needs root and the debian-12 box.
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
TEN = "".join(f"[machines.m{i}]\n" for i in range(10))


def one(provider: str) -> str:
    return f'[machines.web]\nprovider = "{provider}"\nprovision = [{{ shell = "true" }}]\n'


def machine_disk(provider: str, object_name: str) -> Path:
    if provider == "kvm":
        return Path("/var/lib/vbox/images") / f"{object_name}.qcow2"
    return Path("/var/lib/vbox/lxc") / object_name


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
    parser.add_argument("--provider", choices=("lxc", "kvm"), default="lxc")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {k: [] for k in
                                       ("up (create)", "status", "ssh -- true", "ssh again", "provision", "halt",
                                        "up (from halted)", "destroy")}
    disk = []
    with tempfile.TemporaryDirectory(prefix="vbox-bench-") as tmp:
        folder = Path(tmp)
        (folder / "Envfile").write_text(one(args.provider))
        from vbox_cli.project import project_id

        container = machine_disk(args.provider, f"vbox-{project_id(folder)}-web")
        for _ in range(args.runs):
            figures["up (create)"].append(timed(folder, "up"))
            disk.append(disk_used(container))
            figures["status"].append(timed(folder, "status"))
            figures["ssh -- true"].append(timed(folder, "ssh", "web", "--", "true"))  # opens the shared connection
            figures["ssh again"].append(statistics.median(timed(folder, "ssh", "web", "--", "true") for _ in range(5)))
            figures["provision"].append(timed(folder, "provision", "--force"))
            figures["halt"].append(timed(folder, "halt"))
            figures["up (from halted)"].append(timed(folder, "up"))
            figures["destroy"].append(timed(folder, "destroy", "-f"))
        ten = None
        if args.provider == "lxc":
            (folder / "Envfile").write_text(TEN)
            ten = timed(folder, "up")
            timed(folder, "destroy", "-f")
    print(f"{args.provider.upper()} machine life cycle, median of {args.runs} runs (one machine, one trivial step)")
    if args.provider == "kvm":
        from providers.accel import detect
        from vbox_cli.paths import vbox_home

        print(f"  accel: {detect(vbox_home(), None).accel} ({detect(vbox_home(), None).reason})")
    for label, values in figures.items():
        print(f"  {label:20s} {statistics.median(values):6.2f} s")
    print(f"  {'fresh machine disk':20s} {statistics.median(disk) / 1024**2:6.1f} MB")
    if ten is not None:
        print(f"  {'up of 10 machines':20s} {ten:6.2f} s")


if __name__ == "__main__":
    main()
