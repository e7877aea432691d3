"""Building a box from a recipe: debootstrap, configure, then the disk, kernel and initrd.

The build happens in a staging folder of the store and is moved into place only when
complete; an interrupted or failed build leaves nothing in the store.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import time
from pathlib import Path

from boxes.meta import Boot, BoxMeta
from boxes.recipe import Recipe
from boxes.store import ARTEFACTS, Box, BoxStore, discard
from vbox_cli import proc
from vbox_cli.errors import CommandError, VboxError
from vbox_cli.events import Phase

ROOT_LABEL = "vbox-root"
REQUIRED_TOOLS = ("debootstrap", "mke2fs", "qemu-img", "chroot")

# Files written into every box. The machine's own SSH host keys are written by vbox when
# the machine is made; this drop-in only makes sshd start on a box used without vbox.
FILES = {
    "etc/systemd/network/80-vbox.network": (
        # UseDomains: the project network's domain becomes the search domain (`ping db`)
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\n",
        0o644,
    ),
    "etc/systemd/system/ssh.service.d/vbox-host-keys.conf": (
        "[Service]\nExecStartPre=\n"
        # only when the machine has no host key at all: generating RSA keys takes 0.5 s
        "ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || /usr/bin/ssh-keygen -A'\n"
        "ExecStartPre=/usr/sbin/sshd -t\n",
        0o644,
    ),
    "etc/ssh/sshd_config.d/vbox.conf": (
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UseDNS no\n",
        0o644,
    ),
    # x-systemd.growfs: a VM's root file system grows to its (larger) disk at boot;
    # noinit_itable: without it ext4 zeroes the new inode tables after growing, about
    # 100 MB of writes into a fresh machine's overlay; noatime: reads write nothing
    "etc/fstab": (f"LABEL={ROOT_LABEL} / ext4 defaults,noatime,noinit_itable,errors=remount-ro,x-systemd.growfs 0 1\n",
                  0o644),
    # a volatile journal: a persistent one preallocates 8 MB and more in every machine
    "etc/systemd/journald.conf.d/vbox.conf": ("[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n", 0o644),
    # names come from the project network's DNS, not from multicast guesses
    "etc/systemd/resolved.conf.d/vbox.conf": ("[Resolve]\nLLMNR=no\nMulticastDNS=no\n", 0o644),
    # Xen guests have no SMBIOS strings: vbox gives them the same tmpfiles lines as KVM's
    # credential on a small raw disk that starts with "# vbox-seed " (see providers/xen.py)
    "etc/systemd/system/vbox-seed.service": (
        "[Unit]\nDescription=vbox: the machine's identity from its seed disk (Xen guests)\n"
        "ConditionVirtualization=xen\nDefaultDependencies=no\n"
        "After=local-fs.target\nBefore=ssh.service systemd-user-sessions.service sysinit.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/seed\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/seed": (
        "#!/bin/sh\n"
        "# Apply the seed disk vbox gives a Xen guest (its SSH host key, the authorized key).\n"
        "# Its block device may come a moment after boot: look for up to 10 s.\n"
        "set -u\n"
        "i=0\n"
        "while [ $i -lt 100 ]; do\n"
        "  for dev in /sys/block/xvd* /sys/block/vd* /sys/block/sd*; do\n"
        "    [ -e \"$dev\" ] || continue\n"
        "    node=/dev/${dev##*/}\n"
        "    if [ \"$(head -c 12 \"$node\" 2>/dev/null)\" = \"# vbox-seed \" ]; then\n"
        "      head -c 1048576 \"$node\" | tr -d '\\000' > /run/vbox-seed.conf\n"
        "      systemd-tmpfiles --create /run/vbox-seed.conf; rc=$?\n"
        "      rm -f /run/vbox-seed.conf\n"
        "      exit $rc\n"
        "    fi\n"
        "  done\n"
        "  i=$((i + 1)); sleep 0.1\n"
        "done\n"
        "echo 'vbox-seed: no seed disk' >&2\n",
        0o755,
    ),
    # KVM machines' synced folders: virtiofs tags named on the kernel command line
    # (providers/virtiofs.py), mounted before sshd starts, so `up` finds them there
    "etc/systemd/system/vbox-folders.service": (
        "[Unit]\nDescription=vbox: the synced folders named on the kernel command line (virtiofs)\n"
        "ConditionKernelCommandLine=vbox.folder\nDefaultDependencies=no\n"
        "After=local-fs.target\nBefore=ssh.service systemd-user-sessions.service sysinit.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/folders\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/folders": (
        "#!/bin/sh\n"
        "# Mount each vbox.folder=TAG,MODE,PATH of the kernel command line: a virtiofs TAG at\n"
        "# PATH (escaped as systemd-escape --path writes it), MODE ro or rw.\n"
        "set -uf\n"
        "rc=0\n"
        "for word in $(cat /proc/cmdline); do\n"
        "  case \"$word\" in vbox.folder=*) ;; *) continue ;; esac\n"
        "  value=${word#vbox.folder=}\n"
        "  tag=${value%%,*}; rest=${value#*,}; mode=${rest%%,*}; escaped=${rest#*,}\n"
        "  case \"$tag\" in vbox[0-9]|vbox[0-9][0-9]) ;; *) echo \"vbox-folders: bad tag in $word\" >&2; rc=1; continue ;; esac\n"
        "  case \"$mode\" in ro|rw) ;; *) echo \"vbox-folders: bad mode in $word\" >&2; rc=1; continue ;; esac\n"
        "  path=$(systemd-escape --unescape --path -- \"$escaped\") || { rc=1; continue; }\n"
        "  mountpoint -q -- \"$path\" && continue\n"
        "  mkdir -p -- \"$path\" && mount -t virtiofs -o \"$mode\" -- \"$tag\" \"$path\" || rc=1\n"
        "done\n"
        "exit $rc\n",
        0o755,
    ),
    # KVM machines' static addresses on extra networks (vbox.net=MAC,ADDRESS/PREFIX on the
    # kernel command line, providers/kvm.py), handed to networkd before it starts
    "etc/systemd/system/vbox-network.service": (
        "[Unit]\nDescription=vbox: static addresses named on the kernel command line\n"
        "ConditionKernelCommandLine=vbox.net\nDefaultDependencies=no\n"
        "Before=systemd-networkd.service network-pre.target\nWants=network-pre.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/network\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/network": (
        "#!/bin/sh\n"
        "# For each vbox.net=MAC,ADDRESS/PREFIX of the kernel command line: networkd gives the\n"
        "# interface with that MAC that address (a .network file in /run, before /etc's DHCP one).\n"
        "set -uf\n"
        "n=0\n"
        "mkdir -p /run/systemd/network\n"
        "for word in $(cat /proc/cmdline); do\n"
        "  case \"$word\" in vbox.net=*) ;; *) continue ;; esac\n"
        "  value=${word#vbox.net=}; mac=${value%%,*}; address=${value#*,}\n"
        "  echo \"$mac\" | grep -Eqx '([0-9a-f]{2}:){5}[0-9a-f]{2}' || { echo \"vbox-network: bad MAC in $word\" >&2; continue; }\n"
        "  echo \"$address\" | grep -Eqx '[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}' || { echo \"vbox-network: bad address in $word\" >&2; continue; }\n"
        "  n=$((n + 1))\n"
        "  printf '[Match]\\nMACAddress=%s\\n\\n[Network]\\nAddress=%s\\n' \"$mac\" \"$address\" > /run/systemd/network/11-vbox-net$n.network\n"
        "done\n",
        0o755,
    ),
    "etc/hostname": ("debian\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
}
SERVICES = ("systemd-networkd", "systemd-resolved", "ssh", "vbox-seed", "vbox-folders", "vbox-network")


class Reporter:
    """A build's progress as events of the command's stream, about the box."""

    def __init__(self, events=None, subject: str = ""):
        from vbox_cli.events import EventStream

        self.events = events or EventStream()
        self.subject = subject

    def phase(self, phase, detail: str = "") -> None:
        self.events.phase(self.subject, phase, detail)

    def detail(self, line: str) -> None:
        self.events.output(self.subject, line)


def build(
    recipe: Recipe,
    store: BoxStore,
    report: Reporter | None = None,
    force: bool = False,
    mirror: str | None = None,
    cache_dir: Path | None = None,
) -> tuple[Box, bool]:
    """Build the box of `recipe` into `store`. Returns (box, built): built is False when the
    store already had this recipe's box (nothing was done)."""
    report = report or Reporter(subject=recipe.name)
    with store.lock(recipe.name, on_wait=lambda: report.phase(Phase.WAITING, "another build of this box")):
        current = store.find(recipe.name, recipe.version)
        if current and current.meta.recipe_digest == recipe.digest and not force:
            return current, False
        if current and store.users(recipe.name):
            # Never replace a box under machines: LXC machines have its root tree as their lower layer.
            raise VboxError(
                f"box {recipe.name} {recipe.version} is in use and its recipe changed",
                hint="bump the recipe's version to build a new box beside it, or destroy those machines first",
            )
        check_host()
        staged = store.staging(recipe.name)
        try:
            meta = _build_into(staged, recipe, report, mirror or recipe.mirror, cache_dir)
            report.phase(Phase.INSTALLING, "moving the box into the store")
            return store.install(staged, recipe.name, recipe.version, meta), True
        finally:
            discard(staged)


def check_host() -> None:
    if os.geteuid() != 0:
        raise VboxError("building a box needs root (debootstrap, chroot)", hint="run it with sudo")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise VboxError(f"missing tools for a box build: {', '.join(missing)}", hint="run `env doctor --fix`")


def _build_into(staged: Path, recipe: Recipe, report: Reporter, mirror: str, cache_dir: Path | None) -> BoxMeta:
    started = time.monotonic()
    rootfs = staged / ARTEFACTS["rootfs"]
    _debootstrap(rootfs, recipe, report, mirror, cache_dir)
    report.phase(Phase.CONFIGURING, "the root tree")
    _configure(rootfs, recipe)
    report.phase(Phase.KERNEL, "extracting the kernel and initrd")
    kernel, initrd = _kernel_files(rootfs)
    shutil.copy2(kernel, staged / ARTEFACTS["kernel"])
    shutil.copy2(initrd, staged / ARTEFACTS["initrd"])
    if recipe.hypervisor:
        _extract_hypervisor(rootfs, staged / ARTEFACTS["hypervisor"])
    report.phase(Phase.DISK, "making the disk image")
    _make_disk(rootfs, staged / ARTEFACTS["disk"], recipe)
    report.phase(Phase.DIGEST, "computing the digest")
    digest = _digest(staged)
    return BoxMeta(
        name=recipe.name, version=recipe.version, description=recipe.description, digest=f"sha256:{digest}",
        recipe_digest=recipe.digest, recipe=recipe.source, suite=recipe.suite, mirror=mirror, user=recipe.user,
        boot=Boot(root_label=ROOT_LABEL, hypervisor="hypervisor" if recipe.hypervisor else None),
        kernel_version=kernel.name.removeprefix("vmlinuz-"), features=["virtiofs", "static-addresses"],
        built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.monotonic() - started, 1), size=_tree_size(staged),
    )


def _debootstrap(rootfs: Path, recipe: Recipe, report: Reporter, mirror: str, cache_dir: Path | None) -> None:
    report.phase(Phase.BOOTSTRAPPING, f"debootstrap {recipe.suite} from {mirror}")
    argv = ["debootstrap", f"--variant={recipe.variant}", f"--components={','.join(recipe.components)}"]
    if recipe.packages:
        argv.append(f"--include={','.join(recipe.packages)}")
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        argv.append(f"--cache-dir={cache_dir}")
    argv += [recipe.suite, str(rootfs), mirror]
    try:
        proc.stream(argv, report.detail)
    except CommandError as exc:
        log = rootfs / "debootstrap" / "debootstrap.log"
        reason = _debootstrap_reason(exc.output, log)
        raise VboxError(
            f"debootstrap failed (exit status {exc.returncode}): {reason}",
            hint="check the suite, the package names and the mirror in the recipe " + recipe.source,
        ) from None


def _debootstrap_reason(output: str, log: Path) -> str:
    lines = [line for line in output.splitlines() if line.startswith("E:") or "Couldn't" in line]
    if not lines and log.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()[-3:]
    if not lines:
        lines = output.strip().splitlines()[-3:]
    return " / ".join(line.strip() for line in lines) or "no output"


def _chroot(rootfs: Path, *argv: str) -> None:
    proc.run(["chroot", str(rootfs), *argv], env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})


def _configure(rootfs: Path, recipe: Recipe) -> None:
    for relative, (content, mode) in FILES.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        os.chmod(target, mode)
    user = recipe.user
    _chroot(rootfs, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", ",".join(recipe.groups), user)
    sudoers = rootfs / "etc/sudoers.d" / user
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(sudoers, 0o440)
    ssh_dir = rootfs / "home" / user / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").touch(mode=0o600)
    uid_gid = (rootfs / "etc/passwd").read_text().split(f"\n{user}:", 1)[1].split(":")[1:3]
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, int(uid_gid[0]), int(uid_gid[1]))
    _chroot(rootfs, "passwd", "--lock", "root")
    _chroot(rootfs, "systemctl", "enable", *SERVICES)
    # Machines get their own identity: no machine-id, no SSH host keys in the box.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in glob.glob(str(rootfs / "etc/ssh/ssh_host_*")):
        os.unlink(key)
    # Smaller box: no package cache, no package lists, no debootstrap leftovers.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_Packages",
                    "var/lib/apt/lists/*_InRelease", "var/lib/apt/lists/*_Release*", "var/log/*.log"):
        for path in glob.glob(str(rootfs / pattern)):
            os.unlink(path)
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)


def _kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if not kernels:
        raise VboxError("the box has no kernel in /boot", hint="add a linux-image package to the recipe")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.is_file():
        raise VboxError(f"the box has no initrd for {kernel.name}", hint="add initramfs-tools to the recipe")
    return kernel, initrd


def _extract_hypervisor(rootfs: Path, target: Path) -> None:
    """Xen's image, unpacked: QEMU's multiboot loader does not read gzip."""
    import gzip

    images = sorted(rootfs.glob("boot/xen-*.gz"))
    if not images:
        raise VboxError("the recipe asks for a hypervisor but the box has no /boot/xen-*.gz",
                        hint="add xen-system-amd64 to the recipe's packages")
    with gzip.open(images[-1]) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)


def disk_mib(rootfs_bytes: int, disk_size: str) -> int:
    """The box disk's size: "auto" is the root tree, a quarter more for the file system's own
    needs (inodes, journal, reserved blocks) and 256 MiB of room, in whole 256 MiB."""
    from vbox_cli.envfile.types import parse_size

    if disk_size != "auto":
        return parse_size(disk_size) // 1024**2
    need = rootfs_bytes * 5 // 4 // 1024**2 + 256
    return -(-need // 256) * 256


def _make_disk(rootfs: Path, disk: Path, recipe: Recipe) -> None:
    raw = disk.with_suffix(".raw")
    size_mib = disk_mib(_tree_size(rootfs), recipe.disk_size)
    # Inode tables zeroed now (they stay sparse in the qcow2), or every machine's kernel
    # zeroes them at first boot: 32 MB of writes per 2 GB into its overlay.
    proc.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-E", "lazy_itable_init=0,lazy_journal_init=0",
              "-d", str(rootfs), str(raw), f"{size_mib}M"])
    try:
        proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)])
    finally:
        raw.unlink(missing_ok=True)


def _digest(staged: Path) -> str:
    """sha256 over the disk, kernel and initrd (the root tree is the disk's content)."""
    total = hashlib.sha256()
    for kind in ("disk", "kernel", "initrd"):
        part = hashlib.sha256()
        with open(staged / ARTEFACTS[kind], "rb") as f:
            while chunk := f.read(4 * 1024 * 1024):
                part.update(chunk)
        total.update(f"{ARTEFACTS[kind]} {part.hexdigest()}\n".encode())
    return total.hexdigest()


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total
