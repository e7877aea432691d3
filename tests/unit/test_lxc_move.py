"""An LXC machine's root tree made an image and back (providers/lxc_move.py), on real
overlay mounts, mkfs.ext4 and fuse2fs, without a second host: the tree a machine sees is
the same after the round trip, its own layer holds only what differs from the box, and
nothing is written through a link the machine made. The move to another host:
tests/integration/test_migrate_lxc.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from providers import lxc_move
from vbox_cli.errors import VboxError


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its kind, mode, owner and content or target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                what = ("file", path.read_bytes())
            else:
                what = ("dir" if stat.S_ISDIR(st.st_mode) else "other", None)
            found[str(path.relative_to(root))] = (*what, st.st_mode & 0o7777, st.st_uid, st.st_gid)
    return found


@pytest.fixture
def machine(tmp_path):
    """A box tree, and a machine's layer over it: a changed file, a new one, a deleted one
    (a whiteout), a link."""
    lower, upper = tmp_path / "box", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/kept").write_text("the box's\n")
    (lower / "etc/changed").write_text("old\n")
    (lower / "etc/deleted").write_text("gone in the machine\n")
    (lower / "usr/bin").mkdir(parents=True)
    (lower / "usr/bin/tool").write_bytes(b"\x7fELF" + b"x" * 70000)
    os.chmod(lower / "usr/bin/tool", 0o4755)
    (lower / "usr/lib/modules/6.1.0").mkdir(parents=True)  # the box's kernel, for its KVM machines
    (lower / "usr/lib/modules/6.1.0/virtio.ko").write_bytes(b"module" * 1000)
    (lower / "boot").mkdir()
    (lower / "boot/vmlinuz").write_bytes(b"kernel" * 1000)
    for path in lower.rglob("*"):  # a box's files are older than anything a machine writes
        os.utime(path, (1577934245, 1577934245))
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/changed").write_text("new\n")
    (upper / "etc/new").write_text("the machine's\n")
    os.chown(upper / "etc/new", 1000, 1000)
    os.mknod(upper / "etc/deleted", stat.S_IFCHR, os.makedev(0, 0))  # overlayfs's whiteout
    (upper / "etc/link").symlink_to("/etc/kept")
    (upper / "boot").mkdir()  # the machine put something in /boot: that folder travels
    (upper / "boot/custom").write_text("the machine's\n")
    return lower, upper


def merged(lower: Path, upper: Path, point: Path) -> dict[str, tuple]:
    point.mkdir()
    os.system(f"mount -t overlay overlay -o ro,lowerdir={upper}:{lower} {point}")
    try:
        return tree(point)
    finally:
        os.system(f"umount {point}")


def test_a_machine_tree_made_an_image_comes_back_the_same_with_only_its_changes_in_its_layer(machine, tmp_path):
    lower, upper = machine
    seen = merged(lower, upper, tmp_path / "before")
    network = "[Match]\nName=eth0\n"
    image = lxc_move.make_image(upper, lower, tmp_path / "out", {"etc/systemd/network/10-vbox.network": network})
    assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse: 1 GiB free, not written
    assert image.stat().st_size >= 1024**3
    inside = tmp_path / "inside"
    inside.mkdir()
    os.system(f"fuse2fs -o ro {image} {inside}")
    try:  # the box's modules stay behind (an empty folder); its /boot, which the machine changed, goes
        assert (inside / "usr/lib/modules").is_dir() and not any((inside / "usr/lib/modules").iterdir())
        assert sorted(p.name for p in (inside / "boot").iterdir()) == ["custom", "vmlinuz"]
    finally:
        os.system(f"umount {inside}")
    assert not (upper / "etc/systemd").exists()  # the machine's own layer is not touched
    back = tmp_path / "upper2"
    back.mkdir()
    lxc_move.unpack_image(image, tmp_path / "in", back, lower, tmp_path / "work2")
    after = merged(lower, back, tmp_path / "after")
    assert after.pop("etc/systemd/network/10-vbox.network")[1] == network.encode()
    for folder in ("etc/systemd", "etc/systemd/network"):
        after.pop(folder)
    after.pop("lost+found", None)
    assert after == seen
    # its layer: what differs from the box, and nothing the box has unchanged
    assert (back / "etc/changed").read_text() == "new\n" and (back / "etc/new").stat().st_uid == 1000
    assert stat.S_ISCHR((back / "etc/deleted").lstat().st_mode)  # deleted in the machine: still deleted
    assert not (back / "etc/kept").exists() and not (back / "usr/bin/tool").exists()
    assert not (back / "usr/lib/modules").exists()  # the box's, kept: not a whiteout
    assert not (tmp_path / "work2").exists()


def test_files_vbox_writes_into_a_machine_tree_never_go_through_its_links(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("host's\n")
    (root / "etc/systemd").symlink_to(outside)  # a folder of the host, by a link the machine made
    with pytest.raises(VboxError, match="not a folder"):
        lxc_move.write_inside(root, "etc/systemd/network/10-vbox.network", "x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    (root / "etc/systemd").unlink()
    (root / "etc/systemd/network").mkdir(parents=True)
    (root / "etc/systemd/network/10-vbox.network").symlink_to(outside / "secret")
    lxc_move.write_inside(root, "etc/systemd/network/10-vbox.network", "mine\n")  # the link replaced
    assert (outside / "secret").read_text() == "host's\n"
    assert (root / "etc/systemd/network/10-vbox.network").read_text() == "mine\n"
    (root / "etc/systemd/network/10-vbox.network").unlink()
    (root / "etc/systemd/network/10-vbox.network").mkdir()
    with pytest.raises(VboxError, match="is a folder"):
        lxc_move.write_inside(root, "etc/systemd/network/10-vbox.network", "x")


def test_the_network_files_name_the_machines_address_on_the_host_it_lands_on():
    from providers.lxc_config import address_files

    files = address_files("10.7.8.3", "10.7.8.1", "proj.vbox", True)
    assert "Address=10.7.8.3/24\nGateway=10.7.8.1\nDNS=10.7.8.1\nDomains=proj.vbox\n" in \
        files["etc/systemd/network/10-vbox.network"]
    assert "nameserver 10.7.8.1\nsearch proj.vbox\n" in files["etc/resolv.conf"]
    # a box vbox did not build keeps its own resolver
    assert "etc/resolv.conf" not in address_files("10.7.8.3", "10.7.8.1", "proj.vbox", False)


def test_a_link_the_machine_made_on_the_way_to_the_kernel_folders_is_not_mounted_over(machine, tmp_path):
    lower, upper = machine
    host = tmp_path / "host-folder"  # a folder of this host, which the machine's link names
    host.mkdir()
    (host / "keep").write_text("host's\n")
    (upper / "usr").mkdir()
    (upper / "usr/lib").symlink_to(host)
    image = lxc_move.make_image(upper, lower, tmp_path / "out", {})
    assert sorted(p.name for p in host.iterdir()) == ["keep"]  # nothing made, nothing mounted there
    assert not lxc_move.plain_folder(tmp_path / "out/root", "usr/lib/modules")
    inside = tmp_path / "inside"
    inside.mkdir()
    os.system(f"fuse2fs -o ro {image} {inside}")
    try:
        assert os.readlink(inside / "usr/lib") == str(host)  # the machine's link, as a link
    finally:
        os.system(f"umount {inside}")
    assert not os.path.ismount(host / "modules")
