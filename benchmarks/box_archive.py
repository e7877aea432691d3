#!/usr/bin/env python3
"""Export and import of the debian-12 box (one zstd archive), and `env box add` from a
catalog served on 127.0.0.1; prints time, size, rates.

    .venv/bin/python benchmarks/box_archive.py [--runs 3]

Exports the newest debian-12 box of the store, then imports it (and fetches it from a
catalog folder that `env box publish` wrote, served by http.server on loopback) into
throw-away stores (VBOX_HOME and VBOX_CACHE in a temporary folder), so the real store is
not touched. Needs root (the root tree has root's files) and the debian-12 box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VBOX = str(Path(sys.executable).parent / "vbox")


def timed(argv: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from boxes.store import BoxStore

    box = BoxStore().find("debian-12")
    if box is None:
        sys.exit("no debian-12 box: run `env box build debian-12` first")
    with tempfile.TemporaryDirectory(prefix="vbox-bench-archive-") as tmp:
        archive = Path(tmp) / "debian-12.box"
        exports, imports = [], []
        for i in range(args.runs):
            exports.append(timed([VBOX, "--plain", "box", "export", "debian-12", "-o", str(archive)]))
            home = Path(tmp) / f"home{i}"
            imports.append(timed([VBOX, "--plain", "box", "import", str(archive)], env={"VBOX_HOME": str(home)}))
            subprocess.run(["rm", "-rf", str(home)], check=True)
        subprocess.run([VBOX, "--plain", "box", "publish", str(archive), "--catalog", f"{tmp}/www", "--name",
                        "bench/debian-12"], check=True, capture_output=True)
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                                   f"{tmp}/www"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(server.stdout.readline().split(" port ")[1].split()[0])
            adds = []
            for i in range(args.runs):
                home = Path(tmp) / f"add{i}"
                adds.append(timed([VBOX, "--plain", "box", "add", "bench/debian-12", "--catalog",
                                   f"http://127.0.0.1:{port}/bench/debian-12.json"],
                                  env={"VBOX_HOME": str(home), "VBOX_CACHE": str(home / "cache")}))
                subprocess.run(["rm", "-rf", str(home)], check=True)
        finally:
            server.terminate()
            server.wait()
        size = archive.stat().st_size
        print(f"box debian-12 {box.version}: {box.size / 2**20:.1f} MiB in the store, "
              f"archive {size / 2**20:.1f} MiB (zstd, ratio {box.size / size:.2f})")
        for label, times in (("export", exports), ("import (checked)", imports), ("add from catalog", adds)):
            median = statistics.median(times)
            print(f"{label:18} median {median:6.2f} s of {args.runs}  ({box.size / 2**20 / median:6.1f} MiB/s of box)")


if __name__ == "__main__":
    main()
