#!/usr/bin/env python3
"""Machine life-cycle timings from a cached box; prints figures, asserts nothing.

    .venv/bin/python benchmarks/lifecycle.py [--runs N] [--provider lxc|kvm] [--unprivileged]

--unprivileged (lxc): a privileged and an unprivileged machine (`unprivileged = true`) in
turn, each verb's medians side by side with their ratio.

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


def one(provider: str, unprivileged: bool = False) -> str:
    return (f'[machines.web]\nprovider = "{provider}"\nprovision = [{{ shell = "true" }}]\n'
            + ("unprivileged = true\n" if unprivileged else ""))


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


LABELS = ("up (create)", "status", "ssh -- true", "ssh again", "provision", "halt", "up (from halted)", "destroy")


def cycle(folder: Path, container: Path, figures: dict[str, list[float]], disk: list[int]) -> None:
    """One machine's life once, each verb timed."""
    figures["up (create)"].append(timed(folder, "up"))
    disk.append(disk_used(container))
    figures["status"].append(timed(folder, "status"))
    figures["ssh -- true"].append(timed(folder, "ssh", "web", "--", "true"))  # opens the shared connection
    figures["ssh again"].append(statistics.median(timed(folder, "ssh", "web", "--", "true") for _ in range(5)))
    figures["provision"].append(timed(folder, "provision", "--force"))
    figures["halt"].append(timed(folder, "halt"))
    figures["up (from halted)"].append(timed(folder, "up"))
    figures["destroy"].append(timed(folder, "destroy", "-f"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--provider", choices=("lxc", "kvm"), default="lxc")
    parser.add_argument("--unprivileged", action="store_true",
                        help="lxc: privileged and unprivileged machines in turn, side by side with their ratio")
    args = parser.parse_args()
    variants = (False, True) if args.unprivileged and args.provider == "lxc" else (False,)
    figures = {v: {k: [] for k in LABELS} for v in variants}
    disk: dict[bool, list[int]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="vbox-bench-") as tmp:
        folder = Path(tmp)
        from vbox_cli.project import project_id

        container = machine_disk(args.provider, f"vbox-{project_id(folder)}-web")
        for _ in range(args.runs):
            for unprivileged in variants:  # in turn, so that both see the same noise
                (folder / "Envfile").write_text(one(args.provider, unprivileged))
                cycle(folder, container, figures[unprivileged], disk[unprivileged])
        ten = None
        if args.provider == "lxc" and len(variants) == 1:
            (folder / "Envfile").write_text(TEN)
            ten = timed(folder, "up")
            timed(folder, "destroy", "-f")
    print(f"{args.provider.upper()} machine life cycle, median of {args.runs} runs (one machine, one trivial step)")
    if args.provider == "kvm":
        from providers.accel import detect
        from vbox_cli.paths import vbox_home

        print(f"  accel: {detect(vbox_home(), None).accel} ({detect(vbox_home(), None).reason})")
    if len(variants) == 2:
        print(f"  {'':20s} {'privileged':>10s} {'unprivileged':>12s} {'ratio':>6s}")
        for label in LABELS:
            a, b = (statistics.median(figures[v][label]) for v in variants)
            print(f"  {label:20s} {a:8.2f} s {b:10.2f} s {b / a:6.2f}")
        a, b = (statistics.median(disk[v]) / 1024**2 for v in variants)
        print(f"  {'fresh machine disk':20s} {a:7.1f} MB {b:9.1f} MB")
        return
    for label, values in figures[False].items():
        print(f"  {label:20s} {statistics.median(values):6.2f} s")
    print(f"  {'fresh machine disk':20s} {statistics.median(disk[False]) / 1024**2:6.1f} MB")
    if ten is not None:
        print(f"  {'up of 10 machines':20s} {ten:6.2f} s")


if __name__ == "__main__":
    main()
