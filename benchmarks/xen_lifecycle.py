#!/usr/bin/env python3
"""Xen guest life-cycle timings on the emulated Xen host; prints figures, asserts nothing.

    .venv/bin/python benchmarks/xen_lifecycle.py [--modes pv[,pvh,hvm]]

Brings up the xen-host box as a KVM machine (timed), then for each mode a guest on it:
up (create, including sending the box the first time), ssh -- true, halt, up from
halted, destroy. No target yet: these first figures set one. Needs root and the
debian-12 and xen-host boxes (`env box build xen-host`). The default is PV, the mode that
boots under this machine's emulation (README, "Xen"); a PVH or HVM guest here only times
out after its boot_timeout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
HOST = """[machines.xenhost]
box = "xen-host"
provider = "kvm"
cpus = 2
memory = "3G"
boot_timeout = 600
"""
GUEST = """
[machines.{name}]
provider = "xen"
host = "xen+ssh://xenhost/system"
mode = "{mode}"
memory = "384M"
boot_timeout = 900
autostart = false
"""


def timed(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([VBOX, "--plain", *args], cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"`env {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="pv", help="comma-separated: pv, pvh, hvm")
    modes = parser.parse_args().modes.split(",")
    if unknown := set(modes) - {"pv", "pvh", "hvm"}:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="vbox-bench-xen-") as tmp:
        folder = Path(tmp)
        (folder / "Envfile").write_text(HOST + "".join(GUEST.format(name=f"g{m}", mode=m) for m in modes))
        try:
            print(f"xen host up (create, boot Xen and dom0): {timed(folder, 'up'):.1f} s")
            print(f"{'mode':5} {'up (create)':>12} {'ssh true':>9} {'halt':>7} {'up (halted)':>12} {'destroy':>8}")
            for mode in modes:
                name = f"g{mode}"
                row = [timed(folder, "up", name), timed(folder, "ssh", name, "--", "true"),
                       timed(folder, "halt", name), timed(folder, "up", name), timed(folder, "destroy", "-f", name)]
                print(f"{mode:5} " + " ".join(f"{v:>{w}.1f}" for v, w in zip(row, (12, 9, 7, 12, 8))), flush=True)
        finally:
            subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
