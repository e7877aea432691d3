"""A small initrd for the direct kernel boot of a box vbox built (recipe `initrd = "small"`).

Debian's initramfs-tools initrd (15 MB compressed, 51 MB unpacked, with udev) was 3 s of
a KVM machine's 4.3 s of kernel and initrd under TCG here: 1.1 s of unpacking, then its
scripts starting udev, waiting for it, mounting the root. A box's root disk needs a few
modules (its kernel has ext4 built in): the virtio PCI and block drivers (KVM) and Xen's
block front end (Xen guests; an HVM guest's kernel unplugs its emulated disks for it).
This initrd is those modules, a static busybox (the recipe installs busybox-static), and
an /init that loads them, finds `root=` (LABEL=, UUID= or a path),
mounts it as the command line says (rw or ro) and switches to it: uncompressed, about
3 MB. Debian's own initrd stays in the disk's /boot, for a box booted by its own
bootloader (a Vagrant box made from it)."""

from __future__ import annotations

import stat
from pathlib import Path

from vbox_cli.errors import VboxError

# what the root disk needs, in any of the machines a box of vbox boots as; their
# dependencies come from the kernel's modules.dep
# (the IDE driver is not: probing the emulated IDE controller of a KVM machine cost 0.3 s)
MODULES = ("virtio_pci", "virtio_blk", "xen-blkfront")
BUSYBOX = "bin/busybox"  # busybox-static's: no library to bring along
APPLETS = ("sh", "mount", "umount", "insmod", "findfs", "usleep", "cat", "switch_root")
ROOT_WAIT = 60  # seconds for the root disk to appear (a busy host under TCG)

INIT = f"""#!/bin/busybox sh
# vbox's small initrd (boxes/initrd.py): the root disk's drivers, then the root; nothing else
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() {{
  echo "vbox initrd: $*" > /dev/console
  echo "vbox initrd: the boot stops here (a shell on this console)" > /dev/console
  exec sh < /dev/console > /dev/console 2>&1
}}
while read -r module; do insmod "/lib/modules/$module" 2>/dev/null; done < /modules
root=; options=ro; fstype=
for word in $(cat /proc/cmdline); do
  case "$word" in
    root=*) root=${{word#root=}} ;;
    rootfstype=*) fstype=${{word#rootfstype=}} ;;
    rw) options=rw ;;
    ro) options=ro ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
device=; tries=0
while [ -z "$device" ]; do
  case "$root" in
    LABEL=*|UUID=*) device=$(findfs "$root" 2>/dev/null) ;;
    *) [ -b "$root" ] && device=$root ;;
  esac
  [ -n "$device" ] && break
  tries=$((tries + 1))
  [ $tries -le {ROOT_WAIT * 20} ] || fail "no disk for root=$root after {ROOT_WAIT} s"
  usleep 50000
done
mount ${{fstype:+-t "$fstype"}} -o "$options" "$device" /root || fail "cannot mount $device ($root) on /"
umount /sys /proc
mount --move /dev /root/dev || umount /dev
exec switch_root /root /sbin/init "$@"
"""


def modules_in_order(modules_dep: str, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """The paths (relative to the kernel's module folder) of the wanted modules and what
    they depend on, each after its dependencies (insmod's order); a module the kernel has
    built in (absent from modules.dep) is left out."""
    deps: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[path.strip()] = rest.split()
    by_name = {Path(path).name.split(".ko")[0].replace("-", "_"): path for path in deps}
    ordered: list[str] = []

    def add(path: str, seen: tuple[str, ...] = ()) -> None:
        if path in ordered or path in seen:
            return
        # modules.dep lists a module's dependencies, the deepest last
        for dep in reversed(deps.get(path, [])):
            add(dep, (*seen, path))
        ordered.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:
            add(path)
    return ordered


class Cpio:
    """An uncompressed cpio archive in the kernel's "newc" format."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.inode = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.inode += 1
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.parts += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4), data, b"\0" * (-len(data) % 4)]

    def bytes(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def make(rootfs: Path, kernel_version: str) -> bytes:
    """The small initrd, from a box's root tree."""
    busybox = rootfs / BUSYBOX
    if busybox.is_symlink() or not busybox.is_file():
        raise VboxError("the box has no static busybox for its small initrd", hint='add "busybox-static" to the recipe')
    folder = rootfs / "lib" / "modules" / kernel_version
    dep = folder / "modules.dep"
    if not dep.is_file():
        raise VboxError(f"the box has no modules.dep for {kernel_version}")
    order = modules_in_order(dep.read_text())
    archive = Cpio()
    for name in ("bin", "dev", "lib", "lib/modules", "proc", "root", "sys"):
        archive.add(name, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add(BUSYBOX, stat.S_IFREG | 0o755, busybox.read_bytes())
    for applet in APPLETS:
        archive.add(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    archive.add("init", stat.S_IFREG | 0o755, INIT.encode())
    names = []
    for path in order:
        module = folder / path
        if module.is_symlink() or not module.is_file():
            raise VboxError(f"the box's kernel lacks the module {path}")
        names.append(Path(path).name)
        archive.add(f"lib/modules/{Path(path).name}", stat.S_IFREG | 0o644, module.read_bytes())
    archive.add("modules", stat.S_IFREG | 0o644, "".join(f"{name}\n" for name in names).encode())
    return archive.bytes()
