#!/usr/bin/env python3
"""Machines from Vagrant boxes: the time to import each box, and from `env up` to a
machine that answers SSH (and has run one step), beside the same for vbox's debian-12.

    .venv/bin/python benchmarks/vagrant_box.py [--runs 3] [--boxes DIR]

The boxes are made as their publishers make them (tests/integration/foreign_boxes.py:
debootstrap, ifupdown, Vagrant's insecure key, extlinux in the disk), in DIR if given and
kept there, else in a temporary folder. They are imported under bench/ names and removed
afterwards; each machine is destroyed after its run. Needs root and the debian-12 box.
KVM machines run under TCG on a host where KVM does not work (as this one).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
VBOX = str(Path(sys.executable).parent / "vbox")


def vbox(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run([VBOX, "--plain", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def up_seconds(folder: Path, box: str, provider: str) -> tuple[float, str]:
    """Wall time of one `env up` from nothing, and the phases vbox reported."""
    extra = 'memory = "768M"\ndisk = "3G"\n' if provider == "kvm" else ""
    (folder / "Envfile").write_text(f'[machines.m]\nbox = "{box}"\nprovider = "{provider}"\nfolders = []\n{extra}'
                                    'provision = [{ shell = "true" }]\n')
    try:
        started = time.perf_counter()
        out = vbox("up", cwd=folder)
        seconds = time.perf_counter() - started
    finally:
        subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)
    phases = re.search(r"^  m: (.*)$", out, re.M)
    return seconds, phases[1] if phases else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boxes", type=Path, help="make the boxes here (or use the ones made there before)")
    args = parser.parse_args()
    from boxes.store import BoxStore
    from tests.integration import foreign_boxes

    if BoxStore().find("debian-12") is None:
        sys.exit("no debian-12 box: run `env box build debian-12` first")
    with tempfile.TemporaryDirectory(prefix="vbox-bench-vagrant-") as tmp:
        folder = args.boxes or Path(tmp) / "boxes"
        folder.mkdir(parents=True, exist_ok=True)
        files = {"lxc": folder / "bookworm-lxc.box", "libvirt": folder / "bookworm-libvirt.box"}
        if not all(f.is_file() for f in files.values()):
            started = time.perf_counter()
            tree = foreign_boxes.debian_tree(folder / "tree")
            foreign_boxes.vagrant_lxc_box(tree, folder / "lxc", files["lxc"])
            foreign_boxes.vagrant_libvirt_box(tree, folder / "libvirt", files["libvirt"])
            print(f"made both boxes (debootstrap, packing) in {time.perf_counter() - started:.0f} s")
        names = {kind: f"bench/vagrant-{kind}-{os.getpid()}" for kind in files}
        project = Path(tmp) / "project"
        project.mkdir()
        try:
            for kind, path in files.items():
                started = time.perf_counter()
                vbox("box", "import", str(path), "--name", names[kind])
                print(f"import {kind:8} {path.stat().st_size / 2**20:7.1f} MiB .box: "
                      f"{time.perf_counter() - started:5.1f} s")
            for label, box, provider in (("lxc, Vagrant box", names["lxc"], "lxc"),
                                         ("lxc, debian-12", "debian-12", "lxc"),
                                         ("kvm, Vagrant box", names["libvirt"], "kvm"),
                                         ("kvm, debian-12", "debian-12", "kvm")):
                runs = [up_seconds(project, box, provider) for _ in range(args.runs)]
                seconds = [s for s, _ in runs]
                print(f"up to SSH and one step, {label:17}: median {statistics.median(seconds):5.1f} s "
                      f"(runs: {', '.join(f'{s:.1f}' for s in seconds)}; last: {runs[-1][1]})")
        finally:
            for name in names.values():
                subprocess.run([VBOX, "--plain", "box", "remove", name, "--force"], capture_output=True)


if __name__ == "__main__":
    main()
