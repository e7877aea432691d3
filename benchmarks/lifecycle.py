#!/usr/bin/env python3
"""Machine life-cycle timings from a cached box; prints figures, asserts nothing.

    .venv/bin/python benchmarks/lifecycle.py [--runs N] [--provider lxc|kvm] [--unprivileged]
                                             [--user NAME [--user-vbox PATH]] [--warm]

--warm (kvm): machines booted (VBOX_WARM=0) and started warm from the box's memory image
(providers/kvm_warm.py) in turn, side by side with their ratio; the up that makes the
image first is timed apart.
--unprivileged (lxc): a privileged and an unprivileged machine (`unprivileged = true`) in
turn, each verb's medians side by side with their ratio.
--user NAME: root's machine and the same machine of the user NAME (run as her, through
runuser) in turn, side by side with their ratio. She must be prepared (`env doctor --fix
--user NAME`) and, for lxc, have built debian-12 into her own store. Her vbox is
--user-vbox, else one installed for the run into a virtualenv of the system's Python.

`ssh -- true` is the first `env ssh` after `up` (it opens the machine's shared
connection); `ssh again` the median of the five after it (the fast path, through it).

Each median is printed beside its target on the build machine (issue 18: 2 cores, TCG for
VMs), which no test asserts: LXC up (create) <= 0.5 s, up from halted <= 0.4 s, halt <= 0.6
s, destroy <= 0.3 s, status <= 0.08 s, ssh again <= 0.05 s, provision <= 0.08 s; KVM under
TCG up (create) <= 10 s, up from halted <= 9 s, halt <= 2 s, destroy <= 0.5 s, ssh again
<= 0.05 s.
Needs root and the debian-12 box.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compiled

VBOX = str(Path(sys.executable).parent / "vbox")
TEN = "".join(f"[machines.m{i}]\n" for i in range(10))


def one(provider: str, unprivileged: bool = False) -> str:
    return (f'[machines.web]\nprovider = "{provider}"\nprovision = [{{ shell = "true" }}]\n'
            + ("unprivileged = true\n" if unprivileged else ""))


def machine_disk(provider: str, object_name: str, home: Path | None = None) -> Path:
    if provider == "kvm":  # a libvirt group member's volumes are in root's pool too
        return Path("/var/lib/vbox/images") / f"{object_name}.qcow2"
    return (home / ".local/share/vbox/lxc" if home else Path("/var/lib/vbox/lxc")) / object_name


class Runner:
    """How vbox is run: as root, or as a user (runuser, her own environment)."""

    def __init__(self, user: str | None = None, vbox: str = VBOX, environ: dict[str, str] | None = None):
        self.user, self.vbox, self.environ = user, vbox, environ or {}
        self.home = Path(pwd.getpwnam(user).pw_dir) if user else None

    def argv(self, args) -> list[str]:
        if not self.user:
            return ["env", *(f"{k}={v}" for k, v in self.environ.items()), self.vbox, "--plain", *args]
        environ = [f"HOME={self.home}", f"PATH={Path(self.vbox).parent}:/usr/bin:/bin", "LANG=C.UTF-8"]
        return ["runuser", "-u", self.user, "--", "env", "-i", *environ, self.vbox, "--plain", *args]

    def folder(self, folder: Path) -> Path:
        """A project folder, hers if the runner is a user's."""
        folder.mkdir()
        if self.user:
            os.chown(folder, self.home.stat().st_uid, self.home.stat().st_gid)
        return folder


ROOT = Runner()


def timed(folder: Path, *args: str, runner: Runner = ROOT) -> float:
    started = time.perf_counter()
    result = subprocess.run(runner.argv(args), cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"vbox {' '.join(args)} failed{f' as {runner.user}' if runner.user else ''}:\n"
                 f"{result.stdout}{result.stderr}")
    return seconds


def user_vbox(base: Path) -> str:
    """vbox installed for the run into a virtualenv of the system's Python, which a user can run."""
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check",
                    str(Path(__file__).resolve().parent.parent)], check=True)
    return str(venv / "bin/vbox")


def disk_used(folder: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(folder)], capture_output=True, text=True).stdout.split()[0]) * 1024


LABELS = ("up (create)", "status", "ssh -- true", "ssh again", "provision", "halt", "up (from halted)", "destroy")
TARGETS = {
    "lxc": {"up (create)": 0.5, "status": 0.08, "ssh again": 0.05, "provision": 0.08, "halt": 0.6,
            "up (from halted)": 0.4, "destroy": 0.3},
    "kvm": {"up (create)": 10, "ssh again": 0.05, "halt": 2, "up (from halted)": 9, "destroy": 0.5},
}


def cycle(folder: Path, container: Path, figures: dict[str, list[float]], disk: list[int],
          runner: Runner = ROOT) -> None:
    """One machine's life once, each verb timed."""
    def run(*args: str) -> float:
        return timed(folder, *args, runner=runner)

    figures["up (create)"].append(run("up"))
    disk.append(disk_used(container))
    figures["status"].append(run("status"))
    figures["ssh -- true"].append(run("ssh", "web", "--", "true"))  # opens the shared connection
    figures["ssh again"].append(statistics.median(run("ssh", "web", "--", "true") for _ in range(5)))
    figures["provision"].append(run("provision", "--force"))
    figures["halt"].append(run("halt"))
    figures["up (from halted)"].append(run("up"))
    figures["destroy"].append(run("destroy", "-f"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--provider", choices=("lxc", "kvm"), default="lxc")
    parser.add_argument("--unprivileged", action="store_true",
                        help="lxc: privileged and unprivileged machines in turn, side by side with their ratio")
    parser.add_argument("--user", help="root's machine and this user's in turn, side by side with their ratio")
    parser.add_argument("--user-vbox", help="the user's vbox (default: installed for the run)")
    parser.add_argument("--warm", action="store_true",
                        help="kvm: booted and warm-started machines in turn, side by side")
    args = parser.parse_args()
    compiled.ensure()
    if args.user and args.unprivileged:
        parser.error("--user or --unprivileged: one comparison at a time")
    # variant -> (label, unprivileged, runner)
    variants = {"root": ("privileged" if args.unprivileged else "root", False, ROOT)}
    if args.unprivileged and args.provider == "lxc":
        variants["unprivileged"] = ("unprivileged", True, ROOT)
    if args.warm and args.provider == "kvm":
        variants = {"root": ("booted", False, Runner(environ={"VBOX_WARM": "0"})), "warm": ("warm", False, ROOT)}
    figures = {v: {k: [] for k in LABELS} for v in variants}
    disk: dict[str, list[int]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="vbox-bench-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        if args.user:
            runner = Runner(args.user, args.user_vbox or user_vbox(base))
            variants["user"] = (args.user, False, runner)
            figures["user"], disk["user"] = {k: [] for k in LABELS}, []
        from vbox_cli.project import project_id

        folders = {v: runner.folder(base / v) for v, (_, _, runner) in variants.items()}
        first_up = None
        if "warm" in variants:  # the up that makes the image, if there is none of this shape
            (folders["warm"] / "Envfile").write_text(one(args.provider))
            first_up = timed(folders["warm"], "up")
            timed(folders["warm"], "destroy", "-f")
        for _ in range(args.runs):
            for v, (_, unprivileged, runner) in variants.items():  # in turn, so that all see the same noise
                folder = folders[v]
                (folder / "Envfile").write_text(one(args.provider, unprivileged))
                if runner.user:
                    shutil.chown(folder / "Envfile", args.user)
                container = machine_disk(args.provider, f"vbox-{project_id(folder)}-web", runner.home)
                cycle(folder, container, figures[v], disk[v], runner)
        ten = None
        if args.provider == "lxc" and len(variants) == 1:
            (folders["root"] / "Envfile").write_text(TEN)
            ten = timed(folders["root"], "up")
            timed(folders["root"], "destroy", "-f")
    print(f"{args.provider.upper()} machine life cycle, median of {args.runs} runs (one machine, one trivial step)")
    if args.provider == "kvm":
        from providers.accel import detect
        from vbox_cli.paths import vbox_home

        print(f"  accel: {detect(vbox_home(), None).accel} ({detect(vbox_home(), None).reason})")
    if len(variants) == 2:
        first, second = variants
        print(f"  {'':20s} {variants[first][0]:>10s} {variants[second][0]:>12s} {'ratio':>6s}")
        for label in LABELS:
            a, b = (statistics.median(figures[v][label]) for v in (first, second))
            print(f"  {label:20s} {a:8.2f} s {b:10.2f} s {b / a:6.2f}")
        a, b = (statistics.median(disk[v]) / 1024**2 for v in (first, second))
        print(f"  {'fresh machine disk':20s} {a:7.1f} MB {b:9.1f} MB")
        if first_up is not None:
            print(f"  first warm up (its memory image made if missing): {first_up:.2f} s")
        return
    for label, values in figures["root"].items():
        target = TARGETS[args.provider].get(label)
        print(f"  {label:20s} {statistics.median(values):6.2f} s" + (f"   (target <= {target:g} s)" if target else ""))
    print(f"  {'fresh machine disk':20s} {statistics.median(disk['root']) / 1024**2:6.1f} MB")
    if ten is not None:
        print(f"  {'up of 10 machines':20s} {ten:6.2f} s")


if __name__ == "__main__":
    main()
