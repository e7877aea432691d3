"""Synced folders of KVM machines: virtiofs through libvirt (QEMU 7.2's virtiofsd).

Each folder is served by a virtiofsd that libvirt starts with the domain, from a mount
vbox makes for that start only: a copy of the folder's mount, idmapped so that the
project folder's owner is the box's user (the maps of LXC's folders, providers/idmap.py;
this virtiofsd has no id mapping of its own) and read-only where asked. virtiofsd takes
it into a mount namespace of its own as it starts; vbox then detaches it from this
host's, so nothing of it stays mounted here while the machine runs, and nothing in
the project folder's path reaches a command line or the domain's XML.

The machine mounts them at boot: its kernel command line names each one
(`vbox.folder=TAG,MODE,PATH`, PATH escaped as `systemd-escape --path` does), and the
box's vbox-folders.service mounts it (boxes/build.py). virtiofs needs the guest's RAM
shared with virtiofsd: the domain gets a memfd memory backing while it has folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

from providers.libvirt_domain import METADATA_NS
from vbox_cli.errors import VboxError

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")  # Debian's qemu-system-common
KEY = "vbox.folder="  # the kernel command line's word for one folder
BOX_FEATURE = "virtiofs"  # in a box's `guest_features`: it mounts the folders its command line names
_SAFE = frozenset(string.ascii_letters + string.digits + ":_.")


def tag(index: int) -> str:
    return f"vbox{index}"


def escape_path(path: str) -> str:
    """An absolute path as `systemd-escape --path` writes it: "/srv/my app" ->
    "srv-my\\x20app". Nothing in it is special to the kernel's command line or a shell."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        return "-"
    escaped = []
    for i, byte in enumerate("/".join(parts).encode()):
        char = chr(byte)
        if char == "/":
            escaped.append("-")
        elif char in _SAFE and not (i == 0 and char == "."):
            escaped.append(char)
        else:
            escaped.append(f"\\x{byte:02x}")
    return "".join(escaped)


def cmdline_words(spec) -> list[str]:
    return [f"{KEY}{tag(i)},{'ro' if share.readonly else 'rw'},{escape_path(share.target)}"
            for i, share in enumerate(spec.folders)]


def digest(spec) -> str:
    """What the machine's folders are, in short: compared with the running domain's to
    know whether a start would change them."""
    from providers.idmap import folder_maps

    if not spec.folders:
        return ""
    shares = [[str(s.source), s.target, s.readonly] for s in spec.folders]
    text = json.dumps([shares, folder_maps(spec)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def running_digest(xml: str) -> str:
    element = ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}machine")
    return element.get("folders", "") if element is not None else ""


def apply(root: ET.Element, spec, run_dir: Path) -> None:
    """Make a domain's definition (parsed) carry the spec's folders, and nothing of earlier
    ones: filesystems, the memory backing they need, the kernel's command line, the digest."""
    devices = root.find("devices")
    for element in devices.findall("filesystem"):
        driver = element.find("driver")
        if driver is not None and driver.get("type") == "virtiofs":
            devices.remove(element)
    backing = root.find("memoryBacking")
    if backing is not None:
        root.remove(backing)
    cmdline = root.find("os/cmdline")
    if cmdline is not None:  # a box booted by its own bootloader has none, and no folders (no feature)
        words = [w for w in (cmdline.text or "").split() if not w.startswith(KEY)]
        cmdline.text = " ".join(words + cmdline_words(spec))
    machine = root.find(f"metadata/{{{METADATA_NS}}}machine")
    if machine is not None:
        machine.set("folders", digest(spec))
    if not spec.folders:
        return
    backing = ET.Element("memoryBacking")
    ET.SubElement(backing, "source", type="memfd")
    ET.SubElement(backing, "access", mode="shared")
    root.insert(list(root).index(root.find("vcpu")) + 1, backing)
    for i, share in enumerate(spec.folders):
        fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
        ET.SubElement(fs, "driver", type="virtiofs", queue="1024")
        ET.SubElement(fs, "binary", path=str(VIRTIOFSD))
        ET.SubElement(fs, "source", dir=str(run_dir / tag(i)))
        ET.SubElement(fs, "target", dir=tag(i))
        # read-only: the served mount is (libvirt 9 has no read-only virtiofs), and the
        # machine mounts it so


def missing() -> str | None:
    """Why this host cannot serve virtiofs, or None."""
    if not os.access(VIRTIOFSD, os.X_OK):
        return f"{VIRTIOFSD} is missing (Debian's qemu-system-common has it): run `env doctor --fix`"
    return None


@contextmanager
def served(spec, run_dir: Path):
    """The spec's folders mounted under `run_dir` (as the domain's filesystems name them)
    while the domain starts; detached and removed afterwards, also after a failure."""
    from providers import idmap, livemount

    release(run_dir)  # what a start that was killed left
    if not spec.folders:
        yield
        return
    uid_map, gid_map = idmap.folder_maps(spec)
    run_dir.mkdir(mode=0o700, parents=True)
    namespace = run_dir / "idmap"
    try:
        if uid_map:
            idmap.ensure(namespace, uid_map, gid_map)
        for i, share in enumerate(spec.folders):
            if uid_map and (why := idmap.can_idmap(share.source, namespace)):
                raise VboxError(f"{spec.machine.name}: the synced folder {share.source} cannot be shared with "
                                f"its owners mapped: {why}",
                                hint="keep the project on a file system with idmapped mounts (ext4, xfs, tmpfs, "
                                     "btrfs), or set folders = [] for this machine")
            target = run_dir / tag(i)
            target.mkdir(mode=0o700)
            tree = livemount.clone(share.source, namespace if uid_map else None, share.readonly)
            try:
                livemount.place(tree, target)
            finally:
                os.close(tree)
        yield
    finally:
        release(run_dir)


def release(run_dir: Path) -> None:
    """Unmount and remove what `served` made under `run_dir` (the running virtiofsd keep
    their own copy of each mount)."""
    from providers import idmap, livemount

    if not run_dir.is_dir() or run_dir.is_symlink():
        return
    for entry in run_dir.iterdir():
        if entry.name == "idmap":
            idmap.release(entry)
            continue
        livemount.unmount(entry)
        entry.rmdir()
    run_dir.rmdir()


def leftovers(base: Path, prefix: str) -> list[str]:
    """Serving folders under `base` of machines named with `prefix`, and virtiofsd still
    serving one of them."""
    from vbox_cli.proc import processes

    found = [f"virtiofs mount folder {p}" for p in sorted(base.glob(f"{prefix}*")) if p.is_dir()]
    served = str(base / prefix).encode()
    found += [f"virtiofsd process {pid}" for pid, argv in processes()
              if argv[0].endswith(b"virtiofsd") and any(served in arg for arg in argv)]
    return found
