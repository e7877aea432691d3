#!/usr/bin/env python3
"""Synced folders: the same work in the project folder on the host and through the
machine's synced folder; prints the times and their ratio, asserts nothing.

    .venv/bin/python benchmarks/folders.py [--files 10000] [--runs 3]

Work: `git status` in a checkout of N files (git is installed in the machine from the
Debian mirror), and writing 1,000 small files. LXC only for now (KVM machines have no
synced folders yet). Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
ENVFILE = '[machines.web]\nprovision = [{ shell = "apt-get update -q && apt-get install -y -q git >/dev/null" }]\n'
GIT_STATUS = "cd {root}/repo && git status --porcelain >/dev/null"
WRITE = "mkdir -p {root}/write.$$ && cd {root}/write.$$ && for i in $(seq 1000); do echo $i > f$i; done && cd .. && rm -r write.$$"


def host_time(command: str, folder: Path) -> float:
    script = f"TIMEFORMAT=%R; time ({command.format(root=folder)}) 2>&1 >/dev/null"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip().splitlines()[-1])


def machine_time(command: str, folder: Path) -> float:
    """Timed inside the machine (an SSH connection's own cost is not the folder's)."""
    script = f"TIMEFORMAT=%R; time ({command.format(root='/vbox')}) 2>&1 >/dev/null"
    out = subprocess.run([VBOX, "--plain", "ssh", "web", "--", f"bash -c {script!r}"], cwd=folder, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vbox-bench-folders-") as tmp:
        folder = Path(tmp)
        (folder / "Envfile").write_text(ENVFILE)
        repo = folder / "repo"
        repo.mkdir()
        for i in range(args.files):
            sub = repo / f"d{i // 100}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{i}.txt").write_text(f"{i}\n")
        subprocess.run(["bash", "-c", "git init -q && git add -A && git -c user.email=b@x -c user.name=b "
                        "commit -qm files && git config core.untrackedCache false"], cwd=repo, check=True)
        try:
            subprocess.run([VBOX, "--plain", "up"], cwd=folder, check=True, capture_output=True)
            subprocess.run([VBOX, "--plain", "ssh", "web", "--", "git config --global --add safe.directory '*'"],
                           cwd=folder, check=True, capture_output=True)
            print(f"synced folder of an LXC machine, {args.files} files, median of {args.runs} (seconds):")
            print(f"{'work':32} {'host':>8} {'machine':>8} {'ratio':>6}")
            for label, command in ((f"git status ({args.files} files)", GIT_STATUS),
                                   ("write 1,000 small files", WRITE)):
                host = statistics.median(host_time(command, folder) for _ in range(args.runs))
                inside = statistics.median(machine_time(command, folder) for _ in range(args.runs))
                print(f"{label:32} {host:8.3f} {inside:8.3f} {inside / host:6.2f}")
        finally:
            subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


if __name__ == "__main__":
    main()
