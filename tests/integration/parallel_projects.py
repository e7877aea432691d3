"""Many projects at once: N project folders, each looping `env up`, a check over SSH and
`env destroy -f`, all in parallel. Every project's machine is called `web`, like its
neighbours': each round checks that the machine it reaches is its own (a marker its
provisioning wrote, its project in `env status`) and that destroy left nothing of that
project. Counts the processes and open file descriptors of the daemons machines use,
before and after (the way Incus's tests look for leaks).

Used by tests/integration/test_parallel_projects.py and benchmarks/parallel_projects.py;
runs as root, with the debian-12 box.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from providers.leaks import find as find_leaks
from tests.integration.conftest import VBOX
from vbox_cli.project import project_id

ENVFILE = """[machines.web]
provider = "lxc"
memory = "256M"
provision = [{{ shell = "echo {marker} > /root/marker" }}]
"""


@dataclass
class Loop:
    folder: Path
    marker: str
    rounds: int = 0
    timings: dict[str, list[float]] = field(default_factory=lambda: {"up": [], "destroy": []})
    problems: list[str] = field(default_factory=list)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VBOX), "--plain", *args], cwd=self.folder, capture_output=True, text=True, timeout=600)

    def timed(self, verb: str, *args: str) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        result = self.run(verb, *args)
        self.timings[verb].append(time.perf_counter() - started)
        self.check(result, verb)
        return result

    def check(self, result: subprocess.CompletedProcess, what: str) -> None:
        text = result.stdout + result.stderr
        if result.returncode != 0 or "Traceback" in text or "internal error" in text:
            self.problems.append(f"{self.marker}: {what}: rc={result.returncode}: {text.strip()[-600:]}")

    def one_round(self) -> None:
        self.timed("up")
        seen = self.run("ssh", "web", "--", "sudo cat /root/marker")
        self.check(seen, "ssh")
        if seen.returncode == 0 and seen.stdout.strip() != self.marker:
            self.problems.append(f"{self.marker}: ssh web reached {seen.stdout.strip()!r}'s machine")
        status = self.run("status", "--json")
        self.check(status, "status")
        if status.returncode == 0:
            shown = json.loads(status.stdout)
            names = [m["name"] for m in shown["machines"]]
            if shown["project"] != project_id(self.folder) or names != ["web"]:
                self.problems.append(f"{self.marker}: status shows {shown['project']} {names}")
        self.timed("destroy", "-f")
        left = find_leaks(project_id(self.folder))
        if left:
            self.problems.append(f"{self.marker}: destroy left {left}")
        self.rounds += 1


def _pids(match) -> list[int]:
    """This system's processes that match, not those of a container on this host (its own
    libvirtd and virtlogd are seen in /proc too, in a PID namespace of its own)."""
    found = []
    ours = os.readlink("/proc/self/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if cmdline and match(cmdline) and os.readlink(entry / "ns/pid") == ours:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def daemons() -> dict[str, tuple[int, int]]:
    """name -> (processes, open file descriptors in all) for the daemons vbox's machines use:
    libvirtd, virtlogd, dnsmasq of vbox's networks, LXC monitors of vbox's containers."""
    kinds = {
        "libvirtd": lambda c: os.path.basename(c[0]) == b"libvirtd",
        "virtlogd": lambda c: os.path.basename(c[0]) == b"virtlogd",
        "dnsmasq (vbox networks)": lambda c: os.path.basename(c[0]) == b"dnsmasq"
                                             and any(b"/vbox-" in a for a in c),
        "lxc monitors (vbox)": lambda c: c[0].startswith(b"[lxc monitor] /var/lib/vbox/lxc "),
    }
    from providers.hosts import close_all

    close_all()  # this process's own connections to libvirtd are not the daemon's
    report = {}
    for name, match in kinds.items():
        pids = _pids(match)
        report[name] = (len(pids), sum(_fds(p) for p in pids))
    return report


def run(projects: int, seconds: float, base: Path, say=print) -> dict:
    loops = []
    for i in range(projects):
        folder = base / f"p{i}"
        folder.mkdir()
        marker = f"project-{i}-{os.getpid()}"
        (folder / "Envfile").write_text(ENVFILE.format(marker=marker))
        loops.append(Loop(folder, marker))
    before = daemons()
    deadline = time.monotonic() + seconds

    def loop(each: Loop) -> None:
        while time.monotonic() < deadline:
            each.one_round()

    threads = [threading.Thread(target=loop, args=(each,)) for each in loops]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for each in loops:  # whatever a failed round left
        each.run("destroy", "-f")
    time.sleep(1)  # dnsmasq and the monitors of the last networks and containers go
    after = daemons()
    report = {
        "projects": projects, "seconds": elapsed, "rounds": sum(each.rounds for each in loops),
        "problems": [p for each in loops for p in each.problems],
        "timings": {verb: [t for each in loops for t in each.timings[verb]] for verb in ("up", "destroy")},
        "before": before, "after": after,
        "leaks": {each.marker: find_leaks(project_id(each.folder)) for each in loops},
    }
    say(f"{projects} projects, {elapsed:.0f} s: {report['rounds']} rounds of up, ssh, status, destroy; "
        f"{len(report['problems'])} problems")
    for verb, times in report["timings"].items():
        if times:
            say(f"  {verb:8} {len(times):3} runs, median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    for name in before:
        (p0, f0), (p1, f1) = before[name], after[name]
        say(f"  {name:24} processes {p0} -> {p1}, open fds {f0} -> {f1}")
    for problem in report["problems"][:20]:
        say(f"  problem: {problem}")
    return report
