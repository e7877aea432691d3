"""Vagrant boxes (.box files) as vbox boxes: `env box import FILE --name NAME`.

A Vagrant box is a tar archive (most often gzip-compressed) whose metadata.json names
its provider. vbox takes two of them as they are:

- libvirt (vagrant-libvirt): a qcow2 disk, `box.img` (or the first of `disks` in
  metadata.json), with its kernel inside, behind its own bootloader. It becomes the box's
  disk.qcow2; a KVM machine boots it from that bootloader (no kernel beside it).
- lxc (vagrant-lxc): `rootfs.tar.gz`, the root tree (under `./rootfs/` or at the top).
  It becomes the box's rootfs/ for LXC machines.

Such a box is not vbox's own: its user is `vagrant` (or --user), its network is the
publisher's (DHCP, which the project network's reservation answers with the machine's
address), and it trusts Vagrant's insecure key. vbox replaces that key: a machine gets the
project's key and its own SSH host key before its first boot, as from vbox's boxes
(LXC: files in its overlay; KVM: a systemd credential, which systemd 252 and later in
the box reads; docs/boxes.md).

Nothing in the file is trusted. Only the members above are written, under fixed names,
into a staging folder of the store; links, devices and other names are not. The disk's
qcow2 header may not name a backing file or an external data file (QEMU would read a
host file into the machine), and `qemu-img check` must pass. The root tree goes through
the checks of a vbox archive's (boxes/archive.py): no member outside the tree or
through a link, hard links only to files already written, bounded headers, sizes and
compression ratio; device nodes are left out (LXC makes /dev). Only a box that passes
all of it is moved into the store.

VirtualBox and VMware boxes: their one disk, a single-file sparse VMDK (no descriptor
naming other files, no parent disk), is converted to qcow2 with qemu-img, and the import
says so; KVM boots it if its guest can boot from a virtio disk (Linux guests with the
virtio drivers in their initramfs, as Debian's and Ubuntu's are). Other providers' boxes
are refused, with the provider named.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tarfile
from pathlib import Path

from boxes.unpack import (ROOTFS, ArchiveError, Progress, _Extractor, _Member, plain_name, refusals, room,
                          unpack_members)
from boxes.meta import ARTEFACTS, Boot, BoxMeta
from boxes.tree import file_sha256, resolve, tree_digest

PROVIDERS = ("libvirt", "lxc")
# boxes whose one VMDK disk vbox converts to qcow2 for KVM (their guest must boot from virtio)
VMDK_PROVIDERS = ("virtualbox", "vmware_desktop", "vmware_workstation", "vmware_fusion")
METADATA = "metadata.json"
MAX_METADATA = 1024 * 1024
DEFAULT_USER = "vagrant"
_QCOW2_MAGIC = b"QFI\xfb"
# qcow2 v3 incompatible feature bits vbox accepts: dirty (0), compression type (3), extended L2 (4)
_QCOW2_INCOMPATIBLE_OK = 0b11001


def is_vagrant_box(path: Path) -> bool:
    """Whether the file is a tar archive (plain, gzip, bzip2 or xz) with a metadata.json."""
    try:
        with tarfile.open(path, mode="r|*", tarinfo=_Member) as tar:
            for count, member in enumerate(tar):
                if plain_name(member.name) == METADATA:
                    return True
                if count > 64:
                    return False
    except (tarfile.TarError, OSError, EOFError, ArchiveError):
        return False
    return False


def check_qcow2(path: Path) -> int:
    """Refuse a disk QEMU would read anything but itself for; its virtual size."""
    from vbox_cli import proc
    from vbox_cli.errors import CommandError

    with open(path, "rb") as f:
        header = f.read(104)
    if len(header) < 72 or header[:4] != _QCOW2_MAGIC:
        raise ArchiveError("its disk is not a qcow2 image")
    version, backing_offset, backing_size = struct.unpack(">IQI", header[4:20])
    crypt = struct.unpack(">I", header[32:36])[0]
    if version not in (2, 3):
        raise ArchiveError(f"its disk is qcow2 version {version}, which vbox does not know")
    if backing_offset or backing_size:
        raise ArchiveError("its disk names a backing file (QEMU would read another file of this host into the "
                           "machine)")
    if crypt:
        raise ArchiveError("its disk is encrypted")
    if version == 3 and len(header) >= 80:
        incompatible = struct.unpack(">Q", header[72:80])[0]
        if incompatible & ~_QCOW2_INCOMPATIBLE_OK:
            raise ArchiveError(f"its disk uses qcow2 features vbox refuses (incompatible bits {incompatible:#x}: "
                               "an external data file or a corrupt image)")
    try:
        info = json.loads(proc.run(["qemu-img", "info", "-f", "qcow2", "--output=json", str(path)]).stdout)
        proc.run(["qemu-img", "check", "-q", "-f", "qcow2", str(path)])
    except CommandError as exc:
        raise ArchiveError(f"its disk is a damaged qcow2 image: {exc.output.strip().splitlines()[-1:] or exc}") \
            from None
    if info.get("backing-filename") or info.get("format-specific", {}).get("data", {}).get("data-file"):
        raise ArchiveError("its disk names another file")
    return int(info["virtual-size"])


class _TreeExtractor(_Extractor):
    """A root tree from a tar stream, written under staging/rootfs: the checks of a vbox
    archive's, names taken under `./rootfs/` or from the top, device nodes left out."""

    def __init__(self, staging: Path, budget: int, compressed):
        super().__init__(staging, {"size": budget, "files": {}}, None, compressed)
        self.limit = f"the {budget >> 20} MiB the store has room for"
        (staging / ROOTFS).mkdir(mode=0o700)
        self.dirs.add(ROOTFS)
        self.under: bool | None = None  # names under ./rootfs/ (vagrant-lxc) or at the top
        self.skipped = 0

    def _relative(self, name: str) -> str | None:
        """The member's name in the tree, or None for the tree's own folder."""
        plain = plain_name(name)
        if self.under is None:
            self.under = plain == ROOTFS or plain.startswith(ROOTFS + "/")
        if self.under:
            if plain == ROOTFS:
                return None
            if not plain.startswith(ROOTFS + "/"):
                raise ArchiveError(f"a member outside ./{ROOTFS}/: {name!r}")
            plain = plain[len(ROOTFS) + 1:]
        return plain or None

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.ischr() or member.isblk() or member.isfifo():
            self.skipped += 1  # LXC makes the container's /dev
            return
        relative = self._relative(member.name)
        if relative is None:
            if member.isdir():
                self.dir_attrs.insert(0, (ROOTFS, member))
            return
        member.name = f"{ROOTFS}/{relative}"
        if member.islnk():
            target = self._relative(member.linkname)
            member.linkname = f"{ROOTFS}/{target}" if target else ""
        capability = member.pax_headers.pop("SCHILY.xattr.security.capability", None)
        if capability is not None:  # GNU tar's name for it; the value's bytes as tarfile read them
            import base64

            raw = capability.encode("utf-8", "surrogateescape")
            member.pax_headers["VBOX.xattr.security.capability"] = base64.b64encode(raw).decode()
        for key in [k for k in member.pax_headers if k.startswith("SCHILY.xattr.")]:
            del member.pax_headers[key]  # other attributes (SELinux labels, ...) mean nothing here
        super().add(tar, member)


def import_vagrant(path: Path, store, name: str | None, version: str = "0", user: str = DEFAULT_USER,
                   progress: Progress | None = None, on_phase=None, force: bool = False, source: dict | None = None):
    """Check and unpack a Vagrant box into the store; the Box."""
    def make(staging: Path) -> BoxMeta:
        meta = _unpack(path, staging, store, user, progress, on_phase)
        return BoxMeta.from_dict({**meta.to_dict(), "name": name, "version": version,
                                  "source": source or {"file": path.name}})

    return import_into(store, path, name, version, user, force, "a Vagrant box file", make)


def import_into(store, path: Path, name: str | None, version: str, user: str, force: bool, what: str, make):
    """A box made by `make(staging) -> BoxMeta` in a staging folder of the store, from a
    file that names no box: installed if every check passes, else gone."""
    from boxes.store import discard

    staging = None
    try:
        with refusals(path, store):
            check_names(store, name, version, user, force, what)
            staging = store.staging(name)
            box = store.install(staging, name, version, make(staging))
            staging = None
            return box
    finally:
        if staging is not None:
            discard(staging)


def check_names(store, name: str | None, version: str, user: str, force: bool, what: str) -> None:
    """What an import of a file that names no box is given: a box name, a version, a user."""
    from vbox_cli.envfile.types import _box_name

    if not name:
        raise ArchiveError(f"{what} does not say its box's name", hint="give it one: --name ORG/NAME")
    try:
        _box_name(name)
    except ValueError as exc:
        raise ArchiveError(f"the box name {name!r}: {exc}") from None
    if not version or "/" in version or version.startswith(".") or len(version) > 64:
        raise ArchiveError(f"the version {version!r} is not a folder name")
    if not user or not all(c.isalnum() or c in "_-." for c in user) or user.startswith(("-", ".")):
        raise ArchiveError(f"the user {user!r} is not a user name")
    if store.find(name, version) is not None and not force:
        raise ArchiveError(f"the store has {name} {version} already",
                           hint="--force replaces it, or --version or --name imports it beside it")


def _unpack(path: Path, staging: Path, store, user: str, progress: Progress | None, on_phase) -> BoxMeta:
    """The outer archive's members vbox uses, written under fixed names in staging/.in/;
    then the box made of them in staging."""
    def used(name: str, member: tarfile.TarInfo) -> bool:
        if "/" in name:
            return False  # include/: settings for Vagrant
        if name == METADATA and member.size > MAX_METADATA:
            raise ArchiveError(f"its {METADATA} is {member.size} bytes")
        # not the Vagrantfile, lxc-config, info.json: settings for Vagrant
        return name in (METADATA, "rootfs.tar.gz") or name.endswith((".img", ".qcow2", ".vmdk"))

    wanted = unpack_members(path, staging, store, progress, used)
    if METADATA not in wanted:
        raise ArchiveError(f"not a Vagrant box: it has no {METADATA}")
    try:
        metadata = json.loads(wanted[METADATA].read_bytes())
    except ValueError:
        raise ArchiveError(f"its {METADATA} is not JSON") from None
    provider = metadata.get("provider") if isinstance(metadata, dict) else None
    if provider not in PROVIDERS + VMDK_PROVIDERS:
        raise ArchiveError(f"a Vagrant box for the {provider!r} provider; vbox takes the libvirt and lxc "
                           "providers' boxes, and converts VirtualBox's and VMware's disks")
    if on_phase:
        on_phase("verifying")
    if provider == "libvirt":
        meta = _libvirt(metadata, wanted, staging)
    elif provider in VMDK_PROVIDERS:
        if on_phase:
            on_phase("converting its VMDK disk to qcow2")
        meta = _converted(provider, wanted, staging)
    else:
        meta = _lxc(wanted, staging, store, user)
    shutil.rmtree(staging / ".in")
    from boxes.build import _tree_size

    return BoxMeta.from_dict({**meta.to_dict(), "user": user, "size": _tree_size(staging)})


def _libvirt(metadata: dict, wanted: dict[str, Path], staging: Path) -> BoxMeta:
    disks = metadata.get("disks")
    if disks is not None:
        if not isinstance(disks, list) or not disks or not all(isinstance(d, dict) for d in disks):
            raise ArchiveError(f"its {METADATA} has no valid 'disks'")
        if len(disks) > 1:
            raise ArchiveError(f"it has {len(disks)} disks; a vbox machine has one")
        disk_name, disk_format = disks[0].get("path"), disks[0].get("format", metadata.get("format", "qcow2"))
    else:
        disk_name, disk_format = "box.img", metadata.get("format", "qcow2")
    if disk_format != "qcow2":
        raise ArchiveError(f"its disk's format is {disk_format!r}; vbox takes qcow2")
    if not isinstance(disk_name, str) or disk_name not in wanted:
        raise ArchiveError(f"it has no disk {disk_name!r}")
    disk = staging / ARTEFACTS["disk"]
    os.replace(wanted[disk_name], disk)
    check_qcow2(disk)
    os.chmod(disk, 0o644)
    digest = f"disk.qcow2 {file_sha256(disk)}\n"
    return BoxMeta(digest=box_digest(digest), description="a Vagrant box (libvirt), imported",
                   boot=Boot(kernel=None, initrd=None, root_label=""), artefacts={"disk": ARTEFACTS["disk"]})


def check_vmdk(path: Path) -> str:
    """Refuse a VMDK disk QEMU would read anything but itself for; its create type. Only a
    single-file sparse VMDK (VirtualBox's and VMware's streamOptimized or monolithicSparse):
    a descriptor file names its extents by path, and a parent hint names another disk."""
    with open(path, "rb") as f:
        header = f.read(512)
        if len(header) < 512 or header[:4] != b"KDMV":
            raise ArchiveError("its disk is not a single-file sparse VMDK (a descriptor naming other files, or "
                               "no VMDK at all)")
        offset, size = struct.unpack("<QQ", header[28:44])
        if not 0 < size <= 2048:
            raise ArchiveError("its VMDK disk has no embedded descriptor vbox can read")
        f.seek(offset * 512)
        descriptor = f.read(size * 512).split(b"\0", 1)[0].decode("ascii", "replace")
    fields = {}
    for line in descriptor.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            fields[key.strip()] = value.strip().strip('"')
    if "parentFileNameHint" in fields or fields.get("parentCID", "ffffffff").lower() != "ffffffff":
        raise ArchiveError("its VMDK disk names a parent disk (QEMU would read another file of this host into "
                           "the machine)")
    kind = fields.get("createType", "")
    if kind not in ("streamOptimized", "monolithicSparse"):
        raise ArchiveError(f"its VMDK disk is of the type {kind!r}; vbox converts streamOptimized and "
                           "monolithicSparse ones")
    return kind


def _converted(provider: str, wanted: dict[str, Path], staging: Path) -> BoxMeta:
    """A VirtualBox or VMware box: its one VMDK disk, converted to the box's qcow2."""
    from vbox_cli import proc
    from vbox_cli.errors import CommandError

    disks = [name for name in wanted if name.endswith(".vmdk")]
    if len(disks) != 1:
        raise ArchiveError(f"it has {len(disks)} VMDK disks; vbox converts a box with one")
    kind = check_vmdk(wanted[disks[0]])
    disk = staging / ARTEFACTS["disk"]
    try:
        proc.run(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(wanted[disks[0]]), str(disk)])
    except CommandError as exc:
        raise ArchiveError(f"its VMDK disk could not be converted: {exc.output.strip().splitlines()[-1:]}") \
            from None
    wanted[disks[0]].unlink()
    check_qcow2(disk)
    os.chmod(disk, 0o644)
    return BoxMeta(digest=box_digest(f"disk.qcow2 {file_sha256(disk)}\n"),
                   description=f"a Vagrant box ({provider}), imported: its VMDK disk ({disks[0]}, {kind}) converted "
                               "to qcow2; KVM boots it if its guest boots from a virtio disk",
                   boot=Boot(kernel=None, initrd=None, root_label=""), artefacts={"disk": ARTEFACTS["disk"]})


def _lxc(wanted: dict[str, Path], staging: Path, store, user: str) -> BoxMeta:
    import gzip

    inner = wanted.get("rootfs.tar.gz")
    if inner is None:
        raise ArchiveError("it has no rootfs.tar.gz")
    with open(inner, "rb") as raw:
        try:
            stream = gzip.GzipFile(fileobj=raw)
            tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member)
        except (OSError, tarfile.TarError) as exc:
            raise ArchiveError(f"its rootfs.tar.gz is not a gzip-compressed tar archive ({exc})") from None
        extractor = _TreeExtractor(staging, room(store), raw.tell)
        with tar:
            while (member := tar.next()) is not None:
                extractor.add(tar, member)
        extractor.finish([])
    inner.unlink()
    rootfs = staging / ROOTFS
    check_tree(rootfs, user)
    return BoxMeta(digest=box_digest(f"rootfs {tree_digest(rootfs)}\n"), description="a Vagrant box (lxc), imported",
                   artefacts={"rootfs": ARTEFACTS["rootfs"]})


def check_tree(rootfs: Path, user: str, image: bool = False) -> None:
    """What vbox needs of a root tree a machine boots: an init, an sshd and the user.
    `image`: an OCI image's tree, which runs one program and seldom has them."""
    def present(relative: str) -> bool:  # its links followed inside the tree, never to the host's files
        return resolve(rootfs, relative) is not None

    install = ("an image runs one program; a machine boots an init and vbox reaches it over SSH: install them "
               "in the image (Debian, Ubuntu: `RUN apt-get install -y systemd-sysv openssh-server`)") if image \
        else "install openssh-server in the box, or import a box that has it"
    if not any(present(p) for p in ("sbin/init", "usr/sbin/init")):
        raise ArchiveError("its root tree has no init (/sbin/init): a machine could not boot it", hint=install)
    if not any(present(p) for p in ("usr/sbin/sshd", "sbin/sshd")):
        raise ArchiveError("its root tree has no sshd (/usr/sbin/sshd): vbox reaches machines over SSH",
                           hint=install)
    passwd = resolve(rootfs, "etc/passwd")
    if passwd is None or not passwd.is_file():
        raise ArchiveError("its root tree has no /etc/passwd")
    users = [line.split(":", 1)[0] for line in passwd.read_text(errors="replace").splitlines()]
    if user not in users:
        raise ArchiveError(f"its root tree has no user {user!r}",
                           hint="--user names the user that vbox logs in as (with sudo)")


def box_digest(lines: str) -> str:
    """The digest of a box vbox did not build: sha256 over `ARTEFACT SHA256` lines."""
    import hashlib

    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
