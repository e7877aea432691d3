#!/usr/bin/env python3
"""Re-provisioning after the last of 5 steps changed (one of the others is slow: sleep 5):
incremental (back to the snapshot after step 4, step 5 run) against from the top (back
to the snapshot before step 1, all 5 run: `env provision --from 1`) and against a new
machine (`env destroy` + `env up`), for an LXC and a KVM machine; also what the snapshots
between steps cost the first `up`. Prints the figures, asserts nothing.

    .venv/bin/python benchmarks/reprovision.py [--provider lxc|kvm|both]

Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
STEPS = ['echo one > /root/1', 'sleep 5', 'echo three > /root/3', 'echo four > /root/4', 'echo {last} > /root/5']


def envfile(provider: str, last: str) -> str:
    steps = ", ".join(f'{{ shell = "{s.format(last=last)}" }}' for s in STEPS)
    return f'[machines.m]\nprovider = "{provider}"\nmemory = "768M"\nprovision = [{steps}]\n'


def timed(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([VBOX, "--plain", *args], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("lxc", "kvm", "both"), default="both")
    args = parser.parse_args()
    for provider in ("lxc", "kvm") if args.provider == "both" else (args.provider,):
        with tempfile.TemporaryDirectory(prefix="vbox-bench-reprovision-") as tmp:
            folder = Path(tmp)
            try:
                (folder / "Envfile").write_text(envfile(provider, "a"))
                timed(folder, "up")  # once to warm caches (the project's key, its network's first creation)
                timed(folder, "destroy", "-f")
                with_snapshots, without = [], []
                for _ in range(2):  # alternated: the host is shared and noisy
                    with_snapshots.append(timed(folder, "up"))
                    timed(folder, "destroy", "-f")
                    without.append(timed(folder, "up", "--in-place"))  # --in-place: no snapshots between steps
                    timed(folder, "destroy", "-f")
                print(f"{provider}: first up {min(with_snapshots):.2f} s with a snapshot between steps, "
                      f"{min(without):.2f} s without (best of 2)")
                timed(folder, "up")
                (folder / "Envfile").write_text(envfile(provider, "b"))
                incremental = timed(folder, "provision")
                (folder / "Envfile").write_text(envfile(provider, "c"))
                top = timed(folder, "provision", "--from", "1")
                (folder / "Envfile").write_text(envfile(provider, "d"))
                timed(folder, "destroy", "-f")
                fresh = timed(folder, "up")
                print(f"{provider}: step 5 changed: incremental {incremental:.2f} s, from the top {top:.2f} s "
                      f"({top / incremental:.1f}x), a new machine {fresh:.2f} s ({fresh / incremental:.1f}x)")
            finally:
                subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
