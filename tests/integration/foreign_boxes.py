"""Boxes that vbox did not build, made here as their publishers make them: a Debian tree
from debootstrap (not vbox's recipe: ifupdown and DHCP, the user `vagrant` with Vagrant's
insecure key, host keys baked in, its kernel behind a bootloader in its disk), packed as a
Vagrant box of the lxc provider (rootfs.tar.gz) and of the libvirt provider (box.img), and
as an OCI image of two layers (oci-archive).

Used by the tests and by benchmarks/vagrant_box.py; runs as root (debootstrap, a loop
mount to install the bootloader). `python -m tests.integration.foreign_boxes DIR` makes
them all in DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
CACHE = Path("/var/cache/vbox/debootstrap")  # the box builds' package cache, shared
PACKAGES = ["systemd-sysv", "udev", "dbus", "openssh-server", "sudo", "ifupdown", "isc-dhcp-client", "iproute2",
            "procps", "linux-image-cloud-amd64", "initramfs-tools", "extlinux", "syslinux-common"]
# Vagrant's well-known insecure key: every Vagrant box trusts it until its first `vagrant up`
INSECURE_KEY = ("ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1"
                "I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx"
                "4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdE"
                "Tk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure "
                "public key")
HOSTNAME = "vagrant-bookworm"


def run(*argv, **kwargs) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs).stdout


def vagrant_user(target: Path) -> None:
    """The user `vagrant` (password vagrant), with sudo and Vagrant's insecure key."""
    run("chroot", target, "useradd", "--create-home", "--shell", "/bin/bash", "vagrant")
    run("chroot", target, "sh", "-c", "echo vagrant:vagrant | chpasswd")
    (target / "etc/sudoers.d/vagrant").write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(target / "etc/sudoers.d/vagrant", 0o440)
    ssh = target / "home/vagrant/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(INSECURE_KEY + "\n")
    os.chmod(ssh / "authorized_keys", 0o600)
    run("chroot", target, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh")


def debian_tree(target: Path) -> Path:
    """A Debian 12 tree set up as a Vagrant box's publisher does."""
    CACHE.mkdir(parents=True, exist_ok=True)
    run("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", f"--cache-dir={CACHE}",
        "bookworm", target, MIRROR, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    vagrant_user(target)
    (target / "etc/network/interfaces").write_text(
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n")
    (target / "etc/hostname").write_text(HOSTNAME + "\n")
    (target / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    (target / "etc/fstab").write_text("/dev/vda1 / ext4 defaults 0 1\n")
    for pattern in ("var/cache/apt/archives/*.deb",):
        for path in target.glob(pattern):
            path.unlink()
    shutil.rmtree(target / "debootstrap", ignore_errors=True)
    return target


def _tar(archive: Path, folder: Path, names: list[str], gzip: bool = True) -> Path:
    options = {"compresslevel": 1} if gzip else {}  # fast: the tests make them each run
    with tarfile.open(archive, "w:gz" if gzip else "w", format=tarfile.PAX_FORMAT, **options) as tar:
        for name in names:
            tar.add(folder / name, arcname=name)
    return archive


def vagrant_lxc_box(tree: Path, work: Path, out: Path) -> Path:
    """As vagrant-lxc's base boxes are packed: rootfs.tar.gz (./rootfs/...), metadata.json,
    lxc-config; without the kernel, which a container does not use."""
    work.mkdir(parents=True, exist_ok=True)
    run("tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability", "-czf",
        work / "rootfs.tar.gz", "--exclude=./boot/*", "--exclude=./usr/lib/modules/*",
        "--transform=s,^\\.,./rootfs,S", "-C", tree, ".")
    (work / "metadata.json").write_text(json.dumps({"provider": "lxc", "version": "1.0.0",
                                                    "built-on": "2026-11-23",
                                                    "template-opts": {"--arch": "amd64", "--release": "bookworm"}}))
    (work / "lxc-config").write_text("lxc.arch = amd64\n")
    return _tar(out, work, ["metadata.json", "lxc-config", "rootfs.tar.gz"])


def bootable_disk(tree: Path, raw: Path) -> int:
    """A raw disk: an MBR, one ext4 partition with the tree, extlinux booting its kernel
    (its partition's boot sector and ldlinux.sys, installed through a loop mount)."""
    boot = tree / "boot"
    kernel = sorted(boot.glob("vmlinuz-*"))[-1].name
    initrd = sorted(boot.glob("initrd.img-*"))[-1].name
    (boot / "extlinux").mkdir(exist_ok=True)
    (boot / "extlinux/extlinux.conf").write_text(
        f"DEFAULT debian\nTIMEOUT 1\nLABEL debian\n  LINUX /boot/{kernel}\n  INITRD /boot/{initrd}\n"
        "  APPEND root=/dev/vda1 rw console=ttyS0 net.ifnames=0\n")
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink())
    fs_mib = (size * 5 // 4 >> 20) + 512
    part = raw.with_suffix(".part")
    run("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, part, f"{fs_mib}M")
    with open(raw, "wb") as f:
        f.truncate((fs_mib + 1) << 20)
    run("dd", f"if={part}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse")
    part.unlink()
    mnt = raw.with_suffix(".mnt")
    mnt.mkdir()
    run("mount", "-o", "loop,offset=1048576", raw, mnt)
    try:
        run(tree / "usr/bin/extlinux", "--install", mnt / "boot/extlinux")
    finally:
        run("umount", mnt)
        mnt.rmdir()
    # the MBR: syslinux's boot code, one active Linux partition from sector 2048 to the end
    sectors = fs_mib << 11
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, sectors)
    mbr = (tree / "usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440].ljust(446, b"\0") + entry
    with open(raw, "r+b") as f:
        f.write(mbr.ljust(510, b"\0") + b"\x55\xaa")
    return (fs_mib + 1) << 20


def vagrant_libvirt_box(tree: Path, work: Path, out: Path) -> Path:
    """As vagrant-libvirt's boxes are packed: box.img (qcow2), metadata.json, Vagrantfile."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "disk.raw"
    size = bootable_disk(tree, raw)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / "box.img")
    raw.unlink()
    (work / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                    "virtual_size": -(-size // 1024**3)}))
    (work / "Vagrantfile").write_text('Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |libvirt|\n'
                                      '    libvirt.driver = "kvm"\n  end\nend\n')
    return _tar(out, work, ["metadata.json", "Vagrantfile", "box.img"])


def vagrant_virtualbox_box(libvirt_work: Path, work: Path, out: Path) -> Path:
    """As VirtualBox boxes are packed: box.ovf, metadata.json and the disk as a
    streamOptimized VMDK (here the libvirt box's disk, converted)."""
    work.mkdir(parents=True, exist_ok=True)
    run("qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized",
        libvirt_work / "box.img", work / "box-disk001.vmdk")
    (work / "metadata.json").write_text(json.dumps({"provider": "virtualbox"}))
    (work / "box.ovf").write_text('<?xml version="1.0"?>\n<Envelope ovf:version="1.0"/>\n')
    return _tar(out, work, ["metadata.json", "box.ovf", "box-disk001.vmdk"])


def cloud_image(tree: Path, work: Path, out: Path) -> Path:
    """A cloud image as Debian's genericcloud is: a qcow2 disk with a bootloader and
    cloud-init (NoCloud among its datasources), no user of its own, no host keys, its
    network left to cloud-init."""
    work.mkdir(parents=True, exist_ok=True)
    cloud = work / "tree"
    run("cp", "-a", tree, cloud)
    try:
        run("chroot", cloud, "apt-get", "install", "-y", "--no-install-recommends", "cloud-init", "locales",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        # as a cloud image has it: the locale cloud-init sets (en_US.UTF-8) generated
        (cloud / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
        run("chroot", cloud, "locale-gen")
        run("chroot", cloud, "userdel", "--remove", "vagrant")
        (cloud / "etc/sudoers.d/vagrant").unlink()
        for key in (cloud / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (cloud / "etc/network/interfaces").write_text("source /etc/network/interfaces.d/*\n\nauto lo\n"
                                                      "iface lo inet loopback\n")
        (cloud / "etc/cloud/cloud.cfg.d/90-datasources.cfg").write_text("datasource_list: [NoCloud, None]\n")
        for path in (cloud / "var/cache/apt/archives").glob("*.deb"):
            path.unlink()
        raw = work / "disk.raw"
        bootable_disk(cloud, raw)
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, out)
        raw.unlink()
    finally:
        shutil.rmtree(cloud, ignore_errors=True)
    return out


def oci_image(tree: Path, work: Path, out: Path) -> Path:
    """An OCI image layout in a tar archive, as `skopeo copy ... oci-archive:` writes it:
    the tree as its first layer, and a second layer that removes /etc/motd (a whiteout)
    and adds /etc/image-layer."""
    import hashlib

    work.mkdir(parents=True, exist_ok=True)
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(path: Path, media_type: str) -> dict:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        os.replace(path, blobs / digest)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": (blobs / digest).stat().st_size}

    run("tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability", "-czf", work / "l1",
        "--exclude=./boot/*", "--exclude=./usr/lib/modules/*", "-C", tree, ".")
    top = work / "top"
    (top / "etc").mkdir(parents=True, exist_ok=True)
    (top / "etc/.wh.motd").write_text("")
    (top / "etc/image-layer").write_text("2\n")
    run("tar", "--numeric-owner", "--owner=0", "--group=0", "-czf", work / "l2", "-C", top, "etc")
    layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [blob(work / "l1", layer), blob(work / "l2", layer)]
    (work / "config").write_text(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                                             "rootfs": {"type": "layers", "diff_ids": []}}))
    config = blob(work / "config", "application/vnd.oci.image.config.v1+json")
    (work / "manifest").write_text(json.dumps({"schemaVersion": 2, "config": config, "layers": layers,
                                               "mediaType": "application/vnd.oci.image.manifest.v1+json"}))
    manifest = blob(work / "manifest", "application/vnd.oci.image.manifest.v1+json")
    (work / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (work / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    shutil.rmtree(top)
    return _tar(out, work, ["oci-layout", "index.json", "blobs"], gzip=False)


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    tree = debian_tree(folder / "tree")
    print(vagrant_lxc_box(tree, folder / "lxc", folder / "bookworm-lxc.box"))
    print(vagrant_libvirt_box(tree, folder / "libvirt", folder / "bookworm-libvirt.box"))
    print(vagrant_virtualbox_box(folder / "libvirt", folder / "virtualbox", folder / "bookworm-virtualbox.box"))
    print(oci_image(tree, folder / "oci", folder / "bookworm-oci.tar"))
    print(cloud_image(tree, folder / "cloud", folder / "bookworm-cloud.qcow2"))
