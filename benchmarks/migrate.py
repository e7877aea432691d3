#!/usr/bin/env python3
"""How long `env migrate` takes and how long the machine is paused (the downtime), for a
KVM machine moved between this host and a kvm-host machine of the same Envfile (an LXC
machine running libvirt and QEMU); prints the figures, asserts nothing.

    .venv/bin/python benchmarks/migrate.py [--memory 512M] [--rounds 2] [--lxc | --xen]

--lxc: an LXC machine instead, moved cold (the only way it moves) to libvirt's LXC driver
on a kvm-host booted as a KVM machine, and back: `copy` is the move (image made, sent,
defined; fetched and unpacked back), `total` adds its boot until SSH answers (under TCG
there).

--xen: a Xen PV guest, moved cold (the only way it moves: libxl sends memory, not disks)
between two Xen hosts that are KVM machines of the xen-host box, there and back; `total`
includes its boot there until SSH answers (under Xen under TCG here: minutes). Needs the
xen-host box (`env box build xen-host`).

Each round: live there and live back with the machine idle, live there and back while a
process in it keeps rewriting 64 MiB of its memory, a tmpfs file (pages dirtied during
the copy must be sent again), and a cold move there and back (`--cold`: shut down, its own layer
copied, booted there; the time includes the boot until SSH answers). `total` is the
command's time (checks, the target's volumes, the wait for SSH at the new address);
`copy` and `paused` are libvirt's own figures for the migration. Needs root, the
debian-12 and kvm-host boxes (`env box build kvm-host`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")
DIRTY = ("nohup sh -c 'head -c 64M /dev/urandom > /dev/shm/src; while :; do cp /dev/shm/src /dev/shm/dst; done' "
         "</dev/null >/dev/null 2>&1 & echo $!")


def env(folder: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([VBOX, "--plain", *args], cwd=folder, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"env {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


class Failed(Exception):
    pass


def migrate(folder: Path, *args: str) -> dict:
    print(f"env migrate app {' '.join(args)}", end=" ... ", flush=True)
    started = time.perf_counter()
    result = subprocess.run([VBOX, "migrate", "app", *args, "--events"], cwd=folder, capture_output=True, text=True)
    total = time.perf_counter() - started
    if result.returncode != 0:
        log = folder / ".vbox" / "console" / "app.log"
        panic = [line for line in (log.read_text(errors="replace").splitlines() if log.is_file() else [])
                 if "Kernel panic" in line]
        print(f"FAILED: {result.stderr.strip().splitlines()[0] if result.stderr.strip() else result.returncode}"
              + (f"; its console: {panic[0].strip()}" if panic else ""), flush=True)
        raise Failed()
    events = [json.loads(line) for line in result.stdout.splitlines()]
    action = next(e["action"] for e in events if e.get("event") == "machine_result" and e.get("machine") == "app")
    copy = re.search(r" in ([\d.]+) s", action)
    paused = re.search(r"paused (\d+) ms", action)
    print(action, flush=True)
    return {"total": total, "copy": float(copy[1]) if copy else None, "paused": int(paused[1]) if paused else None}


def show(label: str, runs: list[dict]) -> None:
    def median(key: str) -> str:
        values = [r[key] for r in runs if r[key] is not None]
        return f"{statistics.median(values):.{0 if key == 'paused' else 1}f}" if values else "-"

    print(f"{label:<34} total {median('total'):>6} s   copy {median('copy'):>6} s   paused {median('paused'):>5} ms"
          f"   (median of {len(runs)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", default="512M")
    parser.add_argument("--rounds", type=int, default=2)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--lxc", action="store_true", help="an LXC machine, to a KVM kvm-host")
    kind.add_argument("--xen", action="store_true", help="a Xen guest, between two Xen hosts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vbox-bench-migrate-") as tmp:
        folder = Path(tmp)
        host_provider = 'provider = "kvm"\n' if args.lxc else ""  # libvirt's LXC driver needs a kernel of its own
        (folder / "Envfile").write_text(
            "".join(f'[machines.{host}]\nbox = "xen-host"\nprovider = "kvm"\ncpus = 2\nmemory = "2G"\n'
                    'boot_timeout = 900\n\n' for host in ("xenhost", "xenhost2"))
            + f'[machines.app]\nprovider = "xen"\nhost = "xen+ssh://xenhost/system"\nmode = "pv"\n'
              f'memory = "{args.memory}"\nboot_timeout = 900\n'
            if args.xen else
            f'[machines.kvmhost]\nbox = "kvm-host"\n{host_provider}memory = "2G"\ncpus = 2\nfolders = []\n\n'
            f'[machines.app]\nprovider = "{"lxc" if args.lxc else "kvm"}"\nmemory = "{args.memory}"\n'
            'folders = []\n')
        figures: dict[str, list[dict]] = {}
        failed = 0
        try:
            env(folder, "up", timeout=3600)
            for _ in range(args.rounds if args.lxc else 0):
                figures.setdefault("cold there (boot there incl.)", []).append(migrate(folder, "--to", "kvmhost"))
                figures.setdefault("cold back (boot incl.)", []).append(migrate(folder, "--to", "lxc:///system"))
            for _ in range(args.rounds if args.xen else 0):
                figures.setdefault("cold there (boot there incl.)", []).append(migrate(folder, "--to", "xenhost2"))
                figures.setdefault("cold back (boot incl.)", []).append(migrate(folder, "--to", "xenhost"))
            for _ in range(0 if args.lxc or args.xen else args.rounds):
                figures.setdefault("live there, idle", []).append(migrate(folder, "--to", "kvmhost"))
                figures.setdefault("live back, idle", []).append(migrate(folder, "--to", "qemu:///system"))
                pid = env(folder, "ssh", "app", "--", DIRTY).stdout.strip()
                time.sleep(2)
                figures.setdefault("live there, rewriting 64 MiB", []).append(migrate(folder, "--to", "kvmhost"))
                figures.setdefault("live back, rewriting 64 MiB", []).append(migrate(folder, "--to", "qemu:///system"))
                env(folder, "ssh", "app", "--", f"kill {pid}; rm -f /dev/shm/src /dev/shm/dst")
                figures.setdefault("cold there (running: boot incl.)", []).append(
                    migrate(folder, "--to", "kvmhost", "--cold"))
                figures.setdefault("cold back (running: boot incl.)", []).append(
                    migrate(folder, "--to", "qemu:///system", "--cold"))
        except Failed:
            failed = 1  # the machine is lost (a guest that panicked): the rounds end here
        finally:
            subprocess.run([VBOX, "--plain", "destroy", "-f"], cwd=folder, capture_output=True)
        print(f"a {args.memory} LXC machine between this host and a KVM kvm-host (TCG where KVM does not work)"
              if args.lxc else
              f"a {args.memory} Xen PV guest between two Xen hosts (KVM machines, TCG where KVM does not work)"
              if args.xen else
              f"a {args.memory} KVM machine (TCG where KVM does not work) between this host and an LXC kvm-host")
        for label, runs in figures.items():
            show(label, runs)
        moves = sum(len(runs) for runs in figures.values())
        print(f"{moves} moves done, {failed} failed" + (" (the rounds stopped there)" if failed else ""))


if __name__ == "__main__":
    main()
