"""The small initrd (boxes/initrd.py): its modules in load order, and an archive the kernel
unpacks (read back here by a reader of the newc format written from its specification).
Booting it is tests/integration (every KVM machine of the debian-12 box)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from boxes import initrd
from boxes.recipe import Recipe
from vbox_cli.errors import VboxError

DEP = """\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/xen-blkfront.ko:
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
"""
VERSION = "6.1.0-1-cloud-amd64"


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdev major, minor)) of a newc cpio archive, to its trailer."""
    entries, offset = {}, 0
    while True:
        header = data[offset:offset + 110]
        assert header[:6] == b"070701", f"bad magic at {offset}"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_end = offset + 110 + namesize
        name = data[offset + 110:name_end - 1].decode()
        assert data[name_end - 1] == 0
        start = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[start:start + size], rdev)
        offset = start + size + (-(start + size) % 4)


def box_tree(tmp_path: Path, busybox: bool = True) -> Path:
    root = tmp_path / "rootfs"
    folder = root / "lib" / "modules" / VERSION
    for line in DEP.splitlines():
        module = folder / line.split(":")[0]
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_bytes(b"\x7fELF " + module.name.encode())
    (folder / "modules.dep").write_text(DEP)
    if busybox:
        (root / "bin").mkdir()
        (root / "bin" / "busybox").write_bytes(b"\x7fELF busybox")
    return root


def test_modules_come_after_what_they_need_and_only_what_the_root_disk_needs():
    order = [Path(p).name for p in initrd.modules_in_order(DEP)]
    assert order == ["virtio.ko", "virtio_ring.ko", "virtio_pci_modern_dev.ko", "virtio_pci_legacy_dev.ko",
                     "virtio_pci.ko", "virtio_blk.ko", "xen-blkfront.ko"]
    assert "virtio_net.ko" not in order  # the network's drivers load from the root, by udev
    # a module the kernel has built in is not in modules.dep: nothing to load
    assert [Path(p).name for p in initrd.modules_in_order("kernel/drivers/block/xen-blkfront.ko:\n")] == \
        ["xen-blkfront.ko"]


def test_the_archive_holds_init_busybox_its_applets_the_modules_and_a_console(tmp_path):
    entries = read_newc(initrd.make(box_tree(tmp_path), VERSION))
    mode, init, _ = entries["init"]
    assert stat.S_ISREG(mode) and mode & 0o111 and init.startswith(b"#!/bin/busybox sh\n")
    assert entries["bin/busybox"][1] == b"\x7fELF busybox"
    for applet in ("sh", "mount", "findfs", "switch_root", "insmod"):
        assert stat.S_ISLNK(entries[f"bin/{applet}"][0]) and entries[f"bin/{applet}"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    listed = entries["modules"][1].decode().split()
    assert listed[-2:] == ["virtio_blk.ko", "xen-blkfront.ko"] and listed[0] == "virtio.ko"
    for name in listed:
        assert entries[f"lib/modules/{name}"][1] == b"\x7fELF " + name.encode()
    for folder in ("dev", "proc", "sys", "root"):
        assert stat.S_ISDIR(entries[folder][0])
    # the same tree gives the same bytes (a reproducible box)
    assert initrd.make(box_tree(tmp_path / "again"), VERSION) == initrd.make(tmp_path / "rootfs", VERSION)


def test_init_reads_root_and_rw_from_the_command_line_and_stops_with_a_message():
    assert "root=*) root=${word#root=}" in initrd.INIT and "rw) options=rw" in initrd.INIT
    assert "findfs" in initrd.INIT and "exec switch_root /root /sbin/init" in initrd.INIT
    assert 'fail "no disk for root=$root after 60 s"' in initrd.INIT


def test_a_tree_without_busybox_or_modules_is_a_clear_error(tmp_path):
    with pytest.raises(VboxError, match="no static busybox") as raised:
        initrd.make(box_tree(tmp_path, busybox=False), VERSION)
    assert "busybox-static" in raised.value.hint
    with pytest.raises(VboxError, match="modules.dep"):
        initrd.make(box_tree(tmp_path / "other"), "6.1.0-2-cloud-amd64")


def test_a_recipe_names_debian_s_initrd_or_the_small_one():
    base = {"name": "b", "version": "1", "suite": "bookworm", "mirror": "http://deb.debian.org/debian"}
    assert Recipe(**base).initrd == "debian" and Recipe(**base, initrd="small").initrd == "small"
    with pytest.raises(ValueError):
        Recipe(**base, initrd="dracut")
