#!/usr/bin/env python3
"""How long the next `env up` takes after an `env up` killed part way, beside a clean
`env up`, for an LXC and a KVM machine; prints the figures, asserts nothing.

    .venv/bin/python benchmarks/recovery.py [--provider lxc|kvm|both]

For each provider: a clean up (then destroy), then for kills at 30 %, 60 % and 90 % of
the clean up's time: up killed there with SIGKILL, the next up timed, destroy. The
target is that finishing costs no more than a clean up of what is missing. Needs root
and the debian-12 box.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
ENVFILE = '[machines.m]\nprovider = "{provider}"\nmemory = "768M"\nprovision = [{{ shell = "echo done > /root/once" }}]\n'


def timed_up(folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run([VBOX, "--plain", "up"], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def destroy(folder: Path) -> None:
    subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("lxc", "kvm", "both"), default="both")
    args = parser.parse_args()
    for provider in ("lxc", "kvm") if args.provider == "both" else (args.provider,):
        with tempfile.TemporaryDirectory(prefix="vbox-bench-recovery-") as tmp:
            folder = Path(tmp)
            (folder / "Envfile").write_text(ENVFILE.format(provider=provider))
            try:
                clean = timed_up(folder)
                destroy(folder)
                print(f"{provider}: clean up {clean:.2f} s")
                for fraction in (0.3, 0.6, 0.9):
                    process = subprocess.Popen([VBOX, "--plain", "up"], cwd=folder, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
                    time.sleep(clean * fraction)
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    after = timed_up(folder)
                    print(f"{provider}: killed at {clean * fraction:5.2f} s, the next up {after:.2f} s "
                          f"({after / clean:.2f} of a clean up)")
                    destroy(folder)
            finally:
                subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
