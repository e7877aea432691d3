#!/usr/bin/env python3
"""Synced folders: the same work in the project folder on the host and through the
machine's synced folder; prints the times and their ratio, asserts nothing.

    .venv/bin/python benchmarks/folders.py [--files 10000] [--runs 3] [--provider lxc|kvm|both]

Work: `git status` in a checkout of N files (git is installed in the machine from the
Debian mirror), and writing 1,000 small files; then how long after a write on the host
a watch in the machine (inotify, a systemd path unit) fires, with the machine's clock
offset measured over one SSH session and taken out. Needs root and the debian-12 box.
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
ENVFILE = ('[machines.web]\nprovider = "{provider}"\nmemory = "1G"\n'
           'provision = [{{ shell = "apt-get update -q && apt-get install -y -q git >/dev/null" }}]\n')
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


def clock_offset(session) -> float:
    """The machine's clock minus this host's, from the quickest of 7 round trips."""
    best = None
    for _ in range(7):
        before = time.time()
        session.stdin.write("x\n")
        session.stdin.flush()
        theirs = float(session.stdout.readline())
        after = time.time()
        if best is None or after - before < best[0]:
            best = (after - before, theirs - (before + after) / 2)
    return best[1]


def inotify_delays(folder: Path, runs: int) -> list[float]:
    """Seconds from a write here to the machine's watch firing, `runs` times."""
    clock = subprocess.Popen([VBOX, "--plain", "ssh", "web", "--", "while read x; do date +%s.%N; done"],
                             cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    trigger = folder / "trigger"
    trigger.write_text("0\n")
    subprocess.run([VBOX, "--plain", "ssh", "web", "--", "sudo systemd-run --quiet --unit=bench-watch "
                    "--path-property=PathModified=/vbox/trigger sh -c 'date +%s.%N >> /run/fired'"],
                   cwd=folder, check=True, capture_output=True)
    delays = []
    try:
        offset = clock_offset(clock)
        for i in range(runs):
            time.sleep(1.0)
            written = time.time()
            trigger.write_text(f"{i + 1}\n")
            for _ in range(100):
                out = subprocess.run([VBOX, "--plain", "ssh", "web", "--", "cat /run/fired 2>/dev/null || true"],
                                     cwd=folder, capture_output=True, text=True).stdout.split()
                if len(out) > i:
                    delays.append(float(out[i]) - offset - written)
                    break
                time.sleep(0.05)
    finally:
        clock.stdin.close()
        clock.wait(timeout=10)
    return delays


def bench(provider: str, folder: Path, files: int, runs: int) -> None:
    (folder / "Envfile").write_text(ENVFILE.format(provider=provider))
    try:
        subprocess.run([VBOX, "--plain", "up"], cwd=folder, check=True, capture_output=True)
        subprocess.run([VBOX, "--plain", "ssh", "web", "--", "git config --global --add safe.directory '*'"],
                       cwd=folder, check=True, capture_output=True)
        print(f"synced folder of a {provider.upper()} machine, {files} files, median of {runs} (seconds):")
        print(f"{'work':32} {'host':>8} {'machine':>8} {'ratio':>6}")
        for label, command in ((f"git status ({files} files)", GIT_STATUS),
                               ("write 1,000 small files", WRITE)):
            host = statistics.median(host_time(command, folder) for _ in range(runs))
            inside = statistics.median(machine_time(command, folder) for _ in range(runs))
            print(f"{label:32} {host:8.3f} {inside:8.3f} {inside / host:6.2f}")
        delays = inotify_delays(folder, max(runs, 5))
        if delays:
            print(f"inotify in the machine, after a write here: median {statistics.median(delays):.3f} s, "
                  f"max {max(delays):.3f} s ({len(delays)} writes)")
        else:
            print("inotify in the machine: the watch never fired")
    finally:
        subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--provider", choices=("lxc", "kvm", "both"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vbox-bench-folders-") as tmp:
        folder = Path(tmp)
        repo = folder / "repo"
        repo.mkdir()
        for i in range(args.files):
            sub = repo / f"d{i // 100}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{i}.txt").write_text(f"{i}\n")
        subprocess.run(["bash", "-c", "git init -q && git add -A && git -c user.email=b@x -c user.name=b "
                        "commit -qm files && git config core.untrackedCache false"], cwd=repo, check=True)
        for provider in ("lxc", "kvm") if args.provider == "both" else (args.provider,):
            bench(provider, folder, args.files, args.runs)


if __name__ == "__main__":
    main()
