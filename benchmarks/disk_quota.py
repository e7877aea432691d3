#!/usr/bin/env python3
"""What a container's own disk (`disk` on an LXC machine: its layer on an ext4 image on a
loop device) costs on write-heavy work, against a container without one (its layer on
this host's file system): 1 GiB written with dd and flushed, and a copy of /usr (many
small files) flushed; best of 3 each. Also the time of `env up` with and without. Prints
the figures, asserts nothing.

    .venv/bin/python benchmarks/disk_quota.py

Needs root and the debian-12 box.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
WORK = {
    "dd 1 GiB": "dd if=/dev/zero of=/root/blob bs=1M count=1024 conv=fdatasync status=none; rm /root/blob",
    "cp -a /usr": "cp -a /usr /root/usr && sync; rm -rf /root/usr",
}


def env(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([VBOX, "--plain", *args], cwd=folder, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vbox-bench-quota-") as tmp:
        folder = Path(tmp)
        (folder / "Envfile").write_text('[machines.plain]\nmemory = "1G"\n\n'
                                        '[machines.quota]\nmemory = "1G"\ndisk = "4G"\n')
        try:
            ups = {}
            for name in ("plain", "quota"):
                ups[name] = min(env(folder, "up", name) + 0 * env(folder, "destroy", "-f", name)
                                for _ in range(2))
                env(folder, "up", name)
            print(f"env up: {ups['plain']:.2f} s without a disk of its own, {ups['quota']:.2f} s with "
                  f"(best of 2)")
            for label, command in WORK.items():
                spent = {name: min(env(folder, "ssh", name, "--", f"sudo sh -c '{command}'") for _ in range(3))
                         for name in ("plain", "quota")}
                print(f"{label}: {spent['plain']:.2f} s without, {spent['quota']:.2f} s with its own disk "
                      f"({spent['quota'] / spent['plain']:.2f}x)")
        finally:
            subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
