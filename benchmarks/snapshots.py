#!/usr/bin/env python3
"""How long `env snapshot save` and `env snapshot restore` take, for an LXC and a KVM
machine, running and stopped, with a machine that has written some data of its own;
prints the figures, asserts nothing.

    .venv/bin/python benchmarks/snapshots.py [--provider lxc|kvm|both] [--mib 200]

The machine writes --mib MiB in files of 1 MiB and a copy of /usr/share (many small
files) before the snapshots, so that an LXC snapshot (a copy of the container's own
layer) has something to copy. `save` is the command's time; `copy` is the provider's own
part (the detail of the `saved` event); `restore` of a running machine includes its start
and the wait for SSH. Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")


def env(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VBOX, "--plain", *args], cwd=folder, check=True, capture_output=True, text=True)


def timed(folder: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([VBOX, *args, "--events"], cwd=folder, check=True, capture_output=True, text=True)
    spent = time.perf_counter() - started
    detail = ""
    for line in result.stdout.splitlines():
        event = json.loads(line)
        if event.get("phase") == "saved":
            detail = event.get("detail", "")
    return spent, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("lxc", "kvm", "both"), default="both")
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    for provider in ("lxc", "kvm") if args.provider == "both" else (args.provider,):
        with tempfile.TemporaryDirectory(prefix="vbox-bench-snapshots-") as tmp:
            folder = Path(tmp)
            (folder / "Envfile").write_text(f'[machines.m]\nprovider = "{provider}"\nmemory = "768M"\n')
            try:
                env(folder, "up")
                env(folder, "ssh", "m", "--", f"sudo sh -c 'mkdir -p /opt/data && for i in $(seq {args.mib}); do "
                                              "head -c 1048576 /dev/urandom > /opt/data/f$i; done && "
                                              "cp -a /usr/share /opt/share && sync'")
                files = env(folder, "ssh", "m", "--", "sudo find /opt | wc -l").stdout.strip()
                print(f"{provider}: the machine wrote {args.mib} MiB and {files} files of its own")
                for state in ("running", "stopped"):
                    if state == "stopped":
                        env(folder, "halt")
                    save, detail = timed(folder, "snapshot", "save", "m", f"s-{state}")
                    print(f"{provider}: save ({state}) {save:.2f} s (copy: {detail.split(' in ')[-1]})")
                    restore, _ = timed(folder, "snapshot", "restore", "m", f"s-{state}")
                    print(f"{provider}: restore ({state}{', started again' if state == 'running' else ''}) "
                          f"{restore:.2f} s")
                delete, _ = timed(folder, "snapshot", "delete", "m", "s-running")
                print(f"{provider}: delete {delete:.2f} s")
            finally:
                subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
