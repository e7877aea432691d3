#!/usr/bin/env python3
"""vbox beside Vagrant, verb by verb, on this machine; prints figures, asserts nothing.

    benchmarks/compare_vagrant.sh lxc|kvm [rounds]     (installs what it needs, then runs this)

Both tools get the same machine: the debian-12 box's own Debian tree (vbox's recipe),
packed for Vagrant as its publishers pack a box (the user `vagrant` with Vagrant's
insecure key, host keys baked in): a vagrant-lxc box (rootfs.tar.gz) for `lxc`, a
vagrant-libvirt box (box.img) for `kvm`, which boots the box's kernel directly as vbox
does, under the same accelerator vbox chose (TCG where KVM does not work). One machine,
1 CPU, 512 MiB, one shell step (`true`); no synced folder for either under kvm
(vagrant-libvirt's default is NFS, which this host does not serve), each tool's default
for lxc (a bind mount, both).

Each round runs, for each tool: up (create, provisioned), status, ssh -- true (twice:
vbox's first `env ssh` opens the machine's shared connection, the second goes through
it), provision (the step again), halt, up (from halted), destroy. Vagrant's state lives
in a VAGRANT_HOME of its own under the work folder, its box is made once and kept there
(--work, default /var/tmp/vbox-vagrant-bench); every machine is destroyed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compiled

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VBOX = str(Path(sys.executable).parent / "vbox")
VERBS = ("up (create, provisioned)", "status", "ssh -- true", "ssh -- true (again)", "provision (one step)", "halt",
         "up (from halted)", "destroy")
BOX_NAME = "bench/debian-12"  # not vbox-...: vagrant-libvirt names its volume after it, and vbox-* is vbox's


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True) -> str:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def timed(argv: list[str], cwd: Path, env: dict | None = None) -> float:
    started = time.perf_counter()
    run(argv, cwd=cwd, env=env)
    return time.perf_counter() - started


def vagrant_tree(box, target: Path) -> Path:
    """The box's root tree, set up as a Vagrant box's publisher does."""
    from tests.integration.foreign_boxes import vagrant_user

    run(["cp", "-a", "--reflink=auto", str(box.artefact("rootfs")), str(target)])
    vagrant_user(target)
    run(["chroot", str(target), "ssh-keygen", "-A"])  # a published box has its host keys
    return target


def libvirt_box(tree: Path, work: Path, out: Path, box) -> Path:
    """box.img: the tree on an ext4 disk labelled as the box's own (its kernel boots it)."""
    from tests.integration.foreign_boxes import _tar

    work.mkdir(parents=True, exist_ok=True)
    raw = work / "disk.raw"
    size_mib = max(1024, int(run(["du", "-sm", str(tree)]).split()[0]) * 2)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", box.meta.boot.root_label, "-d", str(tree), str(raw), f"{size_mib}M"])
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "box.img")])
    raw.unlink()
    (work / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                    "virtual_size": -(-size_mib // 1024)}))
    (work / "Vagrantfile").write_text("Vagrant.configure('2') do |config|\nend\n")
    return _tar(out, work, ["metadata.json", "Vagrantfile", "box.img"], gzip=False)


def vagrant_box(provider: str, box, work: Path, env: dict) -> None:
    """Make the Vagrant box once per vbox box digest, and add it to our VAGRANT_HOME."""
    from tests.integration.foreign_boxes import vagrant_lxc_box

    kind = "lxc" if provider == "lxc" else "libvirt"
    stamp = work / f"{provider}.box.digest"
    archive = work / f"debian-12-{provider}.box"
    if not (archive.exists() and stamp.exists() and stamp.read_text() == box.meta.digest):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            tree = vagrant_tree(box, Path(tmp) / "tree")
            if provider == "lxc":
                vagrant_lxc_box(tree, Path(tmp) / "pack", archive)
                _plain_lxc_metadata(archive, Path(tmp) / "pack")
            else:
                libvirt_box(tree, Path(tmp) / "pack", archive, box)
        stamp.write_text(box.meta.digest)
        run(["vagrant", "box", "remove", "--force", "--all", "--provider", kind, BOX_NAME], env=env, check=False)
    listed = run(["vagrant", "box", "list"], env=env)
    if not any(line.startswith(BOX_NAME + " ") and f"({kind}," in line for line in listed.splitlines()):
        run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(archive)], env=env)


def _plain_lxc_metadata(archive: Path, pack: Path) -> None:
    """vagrant-lxc hands a box's template-opts to its template, which takes no --arch or
    --release: the metadata without them."""
    from tests.integration.foreign_boxes import _tar

    metadata = json.loads((pack / "metadata.json").read_text())
    metadata.pop("template-opts", None)
    (pack / "metadata.json").write_text(json.dumps(metadata))
    _tar(archive, pack, ["metadata.json", "lxc-config", "rootfs.tar.gz"])


def vagrantfile(provider: str, box, accel: str) -> str:
    common = (f"  config.vm.box = '{BOX_NAME}'\n  config.vm.hostname = 'web'\n"
              "  config.vm.provision 'shell', inline: 'true'\n")
    if provider == "lxc":
        return ("Vagrant.configure('2') do |config|\n" + common +
                "  config.vm.provider :lxc do |lxc|\n"
                "    lxc.backingstore = 'dir'\n"  # LXC's `best` tries LVM first, which fails here
                "    lxc.customize 'cgroup.memory.limit_in_bytes', '512M'\n  end\nend\n")
    cmdline = f"root=LABEL={box.meta.boot.root_label} rw console=ttyS0"
    return ("Vagrant.configure('2') do |config|\n" + common +
            "  config.vm.synced_folder '.', '/vagrant', disabled: true\n"
            "  config.vm.provider :libvirt do |lv|\n"
            f"    lv.driver = '{'kvm' if accel == 'kvm' else 'qemu'}'\n"
            "    lv.memory = 512\n    lv.cpus = 1\n"
            f"    lv.kernel = '{box.artefact('kernel')}'\n    lv.initrd = '{box.artefact('initrd')}'\n"
            f"    lv.cmd_line = '{cmdline}'\n  end\nend\n")


def envfile(provider: str) -> str:
    return (f'[machines.web]\nprovider = "{provider}"\nmemory = "512M"\nprovision = [{{ shell = "true" }}]\n'
            + ("folders = []\n" if provider == "kvm" else ""))


def vagrant_round(folder: Path, provider: str, env: dict) -> dict[str, float]:
    v = ["vagrant"]
    figures = {VERBS[0]: timed([*v, "up", f"--provider={'lxc' if provider == 'lxc' else 'libvirt'}"], folder, env)}
    figures["status"] = timed([*v, "status"], folder, env)
    figures["ssh -- true"] = timed([*v, "ssh", "-c", "true"], folder, env)
    figures["ssh -- true (again)"] = timed([*v, "ssh", "-c", "true"], folder, env)
    figures["provision (one step)"] = timed([*v, "provision"], folder, env)
    figures["halt"] = timed([*v, "halt"], folder, env)
    figures["up (from halted)"] = timed([*v, "up"], folder, env)
    figures["destroy"] = timed([*v, "destroy", "-f"], folder, env)
    return figures


def vbox_round(folder: Path) -> dict[str, float]:
    v = [VBOX, "--plain"]
    figures = {VERBS[0]: timed([*v, "up"], folder)}
    figures["status"] = timed([*v, "status"], folder)
    figures["ssh -- true"] = timed([*v, "ssh", "web", "--", "true"], folder)
    figures["ssh -- true (again)"] = timed([*v, "ssh", "web", "--", "true"], folder)
    figures["provision (one step)"] = timed([*v, "provision", "--force"], folder)
    figures["halt"] = timed([*v, "halt"], folder)
    figures["up (from halted)"] = timed([*v, "up"], folder)
    figures["destroy"] = timed([*v, "destroy", "-f"], folder)
    return figures


def lxc_bridge() -> bool:
    """vagrant-lxc's machines join lxcbr0 (/etc/lxc/default.conf): start LXC's own lxc-net
    when it is not up (no systemd here to do it). True when this run started it."""
    if Path("/sys/class/net/lxcbr0").exists():
        return False
    run(["/usr/libexec/lxc/lxc-net", "start"])
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("provider", choices=("lxc", "kvm"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vbox-vagrant-bench"))
    args = parser.parse_args()
    compiled.ensure()
    if os.geteuid() != 0:
        sys.exit("run as root (Vagrant's lxc and libvirt providers and vbox's machines here)")
    from boxes.store import BoxStore
    from providers.accel import detect
    from vbox_cli.paths import vbox_home

    run([VBOX, "--plain", "box", "build", "debian-12"])
    box = BoxStore().get("debian-12")
    accel = detect(vbox_home(), None).accel if args.provider == "kvm" else ""
    args.work.mkdir(parents=True, exist_ok=True)
    env = {"VAGRANT_HOME": str(args.work / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1",
           "VAGRANT_DEFAULT_PROVIDER": "lxc" if args.provider == "lxc" else "libvirt"}
    vagrant_box(args.provider, box, args.work, env)
    started_bridge = lxc_bridge() if args.provider == "lxc" else False
    figures: dict[str, dict[str, list[float]]] = {"vagrant": {v: [] for v in VERBS}, "vbox": {v: [] for v in VERBS}}
    try:
        with tempfile.TemporaryDirectory(prefix="vagrant-", dir=args.work) as vtmp, \
                tempfile.TemporaryDirectory(prefix="vbox-bench-") as btmp:
            vfolder, bfolder = Path(vtmp), Path(btmp)
            (vfolder / "Vagrantfile").write_text(vagrantfile(args.provider, box, accel))
            (bfolder / "Envfile").write_text(envfile(args.provider))
            try:
                for _ in range(args.rounds):  # alternating, so that both see the same host
                    for verb, seconds in vagrant_round(vfolder, args.provider, env).items():
                        figures["vagrant"][verb].append(seconds)
                    for verb, seconds in vbox_round(bfolder).items():
                        figures["vbox"][verb].append(seconds)
            finally:
                run(["vagrant", "destroy", "-f"], cwd=vfolder, env=env, check=False)
                run([VBOX, "--plain", "destroy", "-f"], cwd=bfolder, check=False)
    finally:
        if started_bridge:
            run(["/usr/libexec/lxc/lxc-net", "stop"], check=False)
    report(args, figures, accel)


def report(args, figures: dict, accel: str) -> None:
    vagrant_version = run(["vagrant", "--version"]).strip()
    plugin = "vagrant-lxc" if args.provider == "lxc" else "vagrant-libvirt"
    plugins = {line.split()[0]: line.split()[1].strip("(,") for line in run(["vagrant", "plugin", "list"]).splitlines()
               if line.strip()}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    label = "LXC" if args.provider == "lxc" else f"KVM ({accel.upper()})"
    print(f"{datetime.date.today()}, {platform.node()}: {os.cpu_count()} cores, {memory:.0f} GiB, "
          f"Linux {platform.release()}; {vagrant_version}, {plugin} {plugins.get(plugin, '?')}; "
          f"median of {args.rounds} rounds, one machine, one shell step")
    print()
    print(f"| verb | {plugin} | vbox {label} | vbox / Vagrant |")
    print("|---|---:|---:|---:|")
    for verb in VERBS:
        v, b = statistics.median(figures["vagrant"][verb]), statistics.median(figures["vbox"][verb])
        print(f"| {verb} | {v:.2f} s | {b:.2f} s | {b / v:.2f}x |")


if __name__ == "__main__":
    main()
