"""Vagrant .box files (boxes/vagrant.py) made here, small: an lxc box whose tree is packed
as vagrant-lxc packs it, a libvirt box with a real qcow2 disk; and hostile ones, each
refused with nothing written to the store. The real boxes (debootstrap, a bootloader,
machines up from them) are in tests/integration/test_foreign_boxes.py."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from boxes import vagrant
from boxes.archive import ArchiveError
from boxes.store import STAGING, BoxStore


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **extra) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, extra.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0) if compress else raw.getvalue()


PASSWD = b"root:x:0:0:root:/root:/bin/bash\nvagrant:x:1000:1000::/home/vagrant:/bin/bash\n"


def tree_members(prefix: str = "./rootfs") -> list:
    d = tarfile.DIRTYPE
    members = [(_info(prefix, d), None)] if prefix else []
    p = f"{prefix}/" if prefix else "./"
    members += [(_info(f"{p}{name}", d), None) for name in ("etc", "usr", "usr/sbin", "usr/lib", "usr/lib/systemd",
                                                             "home", "dev")]
    members += [
        (_info(f"{p}etc/passwd"), PASSWD),
        (_info(f"{p}usr/sbin/sshd", mode=0o755), b"\x7fELF sshd"),
        (_info(f"{p}usr/lib/systemd/systemd", mode=0o755), b"\x7fELF systemd"),
        (_info(f"{p}usr/sbin/init", tarfile.SYMTYPE, linkname="/usr/lib/systemd/systemd"), None),
        (_info(f"{p}usr/sbin/sudo", mode=0o4755), b"\x7fELF sudo"),
        (_info(f"{p}usr/sbin/sudoedit", tarfile.LNKTYPE, linkname=f"{p}usr/sbin/sudo"), None),
        (_info(f"{p}dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
    ]
    ping = _info(f"{p}usr/sbin/ping", mode=0o755)
    cap = base64.b64decode("AQAAAgAgAAAAAAAAAAAAAAAAAAA=").decode("utf-8", "surrogateescape")
    ping.pax_headers = {"SCHILY.xattr.security.capability": cap, "SCHILY.xattr.security.selinux": "x"}
    members.append((ping, b"\x7fELF ping"))
    return members


def lxc_box(path: Path, rootfs: bytes | None = None, metadata: dict | None = None) -> Path:
    meta = json.dumps(metadata or {"provider": "lxc", "version": "1.0.0"}).encode()
    members = [(_info("./metadata.json"), meta), (_info("./lxc-config"), b"lxc.arch = amd64\n")]
    if rootfs is None:
        rootfs = tar_bytes(tree_members())
    members.append((_info("./rootfs.tar.gz"), rootfs))
    path.write_bytes(tar_bytes(members))
    return path


def qcow2(path: Path, *extra: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), "64M"], check=True)
    return path


def libvirt_box(path: Path, disk: Path, metadata: dict | None = None, disk_name: str = "box.img") -> Path:
    meta = json.dumps(metadata or {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}).encode()
    path.write_bytes(tar_bytes([(_info("metadata.json"), meta), (_info("Vagrantfile"), b"# vagrant\n"),
                                (_info(disk_name), disk.read_bytes())]))
    return path


@pytest.fixture
def store(tmp_path):
    return BoxStore(tmp_path / "store")


def nothing_written(store: BoxStore) -> bool:
    staging = store.root / STAGING
    return store.boxes() == [] and (not staging.exists() or not any(staging.iterdir()))


def test_an_lxc_box_becomes_a_root_tree(store, tmp_path):
    box = vagrant.import_vagrant(lxc_box(tmp_path / "x.box"), store, "team/bookworm", version="2.0")
    assert (box.name, box.version, box.meta.user) == ("team/bookworm", "2.0", "vagrant")
    assert box.artefacts == ["rootfs"] and box.digest.startswith("sha256:")
    root = box.artefact("rootfs")
    assert os.stat(root / "usr/sbin/sudo").st_mode & 0o7777 == 0o4755
    assert os.stat(root / "usr/sbin/sudo").st_ino == os.stat(root / "usr/sbin/sudoedit").st_ino
    assert os.readlink(root / "usr/sbin/init") == "/usr/lib/systemd/systemd"
    assert os.getxattr(root / "usr/sbin/ping", "security.capability")
    assert "security.selinux" not in os.listxattr(root / "usr/sbin/ping")
    assert not os.path.lexists(root / "dev/null")  # LXC makes /dev; the box's nodes are left out
    assert box.meta.source == {"file": "x.box"}
    assert nothing_written(BoxStore(tmp_path / "other"))
    # the same tree at the top of rootfs.tar.gz (no ./rootfs/ folder) is taken as well
    flat = vagrant.import_vagrant(lxc_box(tmp_path / "flat.box", tar_bytes(tree_members(""))), store, "flat")
    assert flat.digest == box.digest and flat.version == "0"


def test_a_libvirt_box_becomes_a_disk_booted_by_its_own_bootloader(store, tmp_path):
    box = vagrant.import_vagrant(libvirt_box(tmp_path / "v.box", qcow2(tmp_path / "d.qcow2")), store, "v")
    assert box.artefacts == ["disk"]
    assert box.meta.boot.kernel is None and box.meta.boot.initrd is None
    # vagrant-libvirt's newer format names its disks
    meta = {"provider": "libvirt", "format": "qcow2", "disks": [{"path": "box_0.img", "format": "qcow2"}]}
    other = vagrant.import_vagrant(libvirt_box(tmp_path / "w.box", tmp_path / "d.qcow2", meta, "box_0.img"),
                                   store, "w")
    assert other.digest == box.digest


def test_a_disk_that_names_another_file_is_refused(store, tmp_path):
    """QEMU would read a host file into the machine: a backing file, an external data file."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret" * 1000)
    backed = qcow2(tmp_path / "backed.qcow2", "-b", str(secret), "-F", "raw")
    with pytest.raises(ArchiveError, match="backing file"):
        vagrant.import_vagrant(libvirt_box(tmp_path / "b.box", backed), store, "b")
    data = qcow2(tmp_path / "data.qcow2", "-o", f"data_file={tmp_path / 'data.raw'}")
    with pytest.raises(ArchiveError, match="external data file"):
        vagrant.import_vagrant(libvirt_box(tmp_path / "c.box", data), store, "c")
    not_qcow2 = tmp_path / "raw.img"
    not_qcow2.write_bytes(b"\0" * 65536)
    with pytest.raises(ArchiveError, match="not a qcow2"):
        vagrant.import_vagrant(libvirt_box(tmp_path / "r.box", not_qcow2), store, "r")
    damaged = qcow2(tmp_path / "damaged.qcow2")
    with open(damaged, "r+b") as f:  # the L1 table's offset, past the end of the file
        f.seek(40)
        f.write((1 << 40).to_bytes(8, "big"))
    with pytest.raises(ArchiveError, match="damaged"):
        vagrant.import_vagrant(libvirt_box(tmp_path / "x.box", damaged), store, "x")
    assert nothing_written(store)


def _tree_with(*extra) -> bytes:
    return tar_bytes(tree_members() + list(extra))


@pytest.mark.parametrize("case,rootfs,words", [
    ("traversal", lambda: _tree_with((_info("./rootfs/../../etc/cron.d/x"), b"* * * * * root sh\n")), "leaves"),
    ("absolute", lambda: _tree_with((_info("/etc/cron.d/x"), b"x")), "outside"),
    ("outside rootfs", lambda: _tree_with((_info("./elsewhere/x"), b"x")), "outside"),
    ("through a link", lambda: _tree_with((_info("./rootfs/host", tarfile.SYMTYPE, linkname="/etc"), None),
                                          (_info("./rootfs/host/cron.d"), b"x")), "link"),
    ("hard link out", lambda: _tree_with((_info("./rootfs/shadow", tarfile.LNKTYPE, linkname="/etc/shadow"), None)),
     "outside"),
    ("hard link to a link", lambda: _tree_with((_info("./rootfs/l", tarfile.LNKTYPE, linkname="./rootfs/usr/sbin/init"),
                                                None)), "hard link"),
    ("twice", lambda: _tree_with((_info("./rootfs/etc/passwd"), PASSWD)), "twice"),
    ("no sshd", lambda: tar_bytes([m for m in tree_members() if not m[0].name.endswith("sshd")]), "no sshd"),
    ("no user", lambda: tar_bytes([(i, d if not i.name.endswith("passwd") else b"root:x:0:0::/root:/bin/sh\n")
                                   for i, d in tree_members()]), "no user 'vagrant'"),
    ("passwd is the host's", lambda: tar_bytes(
        [m for m in tree_members() if not m[0].name.endswith(("passwd", "/etc"))]
        + [(_info("./rootfs/etc", tarfile.SYMTYPE, linkname="/etc"), None)]), "no /etc/passwd"),
    ("not gzip", lambda: b"plain bytes", "not a gzip"),
])
def test_hostile_root_trees(store, tmp_path, case, rootfs, words):
    with pytest.raises(ArchiveError, match=words):
        vagrant.import_vagrant(lxc_box(tmp_path / "h.box", rootfs()), store, "h")
    assert nothing_written(store)
    assert not (Path("/etc/cron.d/x")).exists()


def test_a_bomb_and_a_provider_vbox_does_not_take(store, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("./rootfs", tarfile.DIRTYPE))
        info = _info("./rootfs/zeros", size=64 << 20)
        tar.addfile(info, io.BytesIO(b"\0" * (64 << 20)))
    bomb = gzip.compress(raw.getvalue(), compresslevel=9)
    assert len(bomb) < (64 << 20) // 300
    with pytest.raises(ArchiveError, match="bomb"):
        vagrant.import_vagrant(lxc_box(tmp_path / "bomb.box", bomb), store, "bomb")
    with pytest.raises(ArchiveError, match="'hyperv' provider"):
        vagrant.import_vagrant(lxc_box(tmp_path / "hv.box", metadata={"provider": "hyperv"}), store, "hv")
    with pytest.raises(ArchiveError, match="does not say its box.s name"):
        vagrant.import_vagrant(lxc_box(tmp_path / "n.box"), store, None)
    with pytest.raises(ArchiveError, match="user"):
        vagrant.import_vagrant(lxc_box(tmp_path / "u.box"), store, "u", user="-oProxyCommand=x")
    assert nothing_written(store)


def test_detection(tmp_path):
    assert vagrant.is_vagrant_box(lxc_box(tmp_path / "a.box"))
    (tmp_path / "b").write_bytes(tar_bytes([(_info("hello"), b"x")]))
    assert not vagrant.is_vagrant_box(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"not a tar")
    assert not vagrant.is_vagrant_box(tmp_path / "c")


def test_a_box_a_machine_cannot_boot_is_refused_before_anything_is_made(store, tmp_path):
    from types import SimpleNamespace

    from providers.kvm import KvmProvider
    from providers.lxc import LxcProvider
    from providers.xen import XenProvider
    from vbox_cli.errors import VboxError
    from vbox_cli.machines.boxes import usable

    def provider(cls):
        return SimpleNamespace(name=cls.name, label=cls.label, needs=cls.needs)

    tree = vagrant.import_vagrant(lxc_box(tmp_path / "x.box"), store, "tree")
    disk = vagrant.import_vagrant(libvirt_box(tmp_path / "v.box", qcow2(tmp_path / "d.qcow2")), store, "disk")
    assert usable(tree, "m", provider(LxcProvider)) is tree
    assert usable(disk, "m", provider(KvmProvider)) is disk
    with pytest.raises(VboxError, match="cannot make this KVM machine: it has a root tree only") as refused:
        usable(tree, "m", provider(KvmProvider))
    assert refused.value.hint == 'use provider = "lxc" for it'
    with pytest.raises(VboxError, match="cannot make this LXC container: it has a disk only"):
        usable(disk, "m", provider(LxcProvider))
    with pytest.raises(VboxError, match="Xen PV guest needs a kernel beside the disk") as refused:
        usable(disk, "m", provider(XenProvider))
    assert refused.value.hint == 'use provider = "kvm" for it'


def test_a_cloud_image_becomes_a_disk_with_a_seed_identity(store, tmp_path):
    from boxes import cloud

    image = qcow2(tmp_path / "noble.img")
    assert cloud.is_cloud_image(image) and not vagrant.is_vagrant_box(image)
    box = cloud.import_cloud_image(image, store, "ubuntu-24.04")
    assert (box.meta.identity, box.meta.user, box.artefacts) == ("cloud-init", "vbox", ["disk"])
    assert box.meta.boot.kernel is None and image.is_file()  # the user's file stays where it was
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret")
    with pytest.raises(ArchiveError, match="backing file"):
        cloud.import_cloud_image(qcow2(tmp_path / "b.img", "-b", str(secret), "-F", "raw"), store, "b")
    assert [b.name for b in store.boxes()] == ["ubuntu-24.04"]


def vmdk(path: Path, subformat: str = "streamOptimized") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), "64M"],
                   check=True)
    return path


def virtualbox_box(path: Path, disk: Path) -> Path:
    meta = json.dumps({"provider": "virtualbox"}).encode()
    path.write_bytes(tar_bytes([(_info("metadata.json"), meta), (_info("box.ovf"), b"<Envelope/>"),
                                (_info("box-disk001.vmdk"), disk.read_bytes())]))
    return path


def test_a_virtualbox_box_has_its_disk_converted(store, tmp_path):
    box = vagrant.import_vagrant(virtualbox_box(tmp_path / "vb.box", vmdk(tmp_path / "d.vmdk")), store, "vb")
    assert box.artefacts == ["disk"] and "converted to qcow2" in box.meta.description
    assert open(box.artefact("disk"), "rb").read(4) == b"QFI\xfb"


def test_a_vmdk_that_names_other_files_is_refused(store, tmp_path):
    secret = tmp_path / "secret.vmdk"
    vmdk(secret, "monolithicSparse")
    child = tmp_path / "child.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", str(secret), "-F", "vmdk", str(child)], check=True)
    with pytest.raises(ArchiveError, match="parent disk"):
        vagrant.import_vagrant(virtualbox_box(tmp_path / "c.box", child), store, "c")
    flat = tmp_path / "flat.vmdk"
    vmdk(flat, "monolithicFlat")  # a text descriptor naming its extent file by path
    with pytest.raises(ArchiveError, match="not a single-file sparse VMDK"):
        vagrant.import_vagrant(virtualbox_box(tmp_path / "f.box", flat), store, "f")
    assert nothing_written(store)
