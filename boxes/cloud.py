"""Cloud images as boxes: `env box import debian-12-genericcloud-amd64.qcow2 --name NAME`.

A cloud image is a qcow2 disk with its kernel behind its own bootloader and cloud-init
inside (Debian's genericcloud and Ubuntu's cloud images). It becomes the box's disk as it
is, after the checks of a Vagrant box's disk (boxes/vagrant.py: no backing or data file,
`qemu-img check`); KVM machines boot it from its bootloader and give it their identity
through a NoCloud seed (providers/cloudinit.py): the box's user (vbox unless --user) with
the project's key, the machine's host key and name, DHCP for its address.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from boxes.unpack import ArchiveError, Progress, room
from boxes.meta import ARTEFACTS, Boot, BoxMeta
from boxes.tree import CHUNK
from boxes.vagrant import _QCOW2_MAGIC, box_digest, check_qcow2, import_into

DEFAULT_USER = "vbox"


def is_cloud_image(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _QCOW2_MAGIC


def import_cloud_image(path: Path, store, name: str | None, version: str = "0", user: str = DEFAULT_USER,
                       progress: Progress | None = None, on_phase=None, force: bool = False):
    """Check a cloud image and add it to the store as a box; the Box."""
    from boxes.build import _tree_size
    from providers.cloudinit import IDENTITY

    def make(staging: Path) -> BoxMeta:
        total = path.stat().st_size
        if total > room(store):
            raise ArchiveError(f"it is {total >> 20} MiB and the store has room for {room(store) >> 20} MiB")
        disk = staging / ARTEFACTS["disk"]
        digest = hashlib.sha256()
        done = 0
        with open(path, "rb") as source, open(disk, "xb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and done % (64 * CHUNK) < len(chunk):
                    progress(done, total)
        if progress:
            progress(total, total)
        if on_phase:
            on_phase("checking the disk")
        check_qcow2(disk)
        disk.chmod(0o644)
        return BoxMeta(digest=box_digest(f"disk.qcow2 {digest.hexdigest()}\n"), name=name, version=version, user=user, identity=IDENTITY,
                       description="a cloud image (cloud-init), imported", boot=Boot(kernel=None, initrd=None,
                                                                                      root_label=""),
                       artefacts={"disk": ARTEFACTS["disk"]}, size=_tree_size(staging), source={"file": path.name})

    return import_into(store, path, name, version, user, force, "a cloud image", make)
