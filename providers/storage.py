"""The libvirt storage pool of vbox's VM disks, and the box images in it.

A machine's disk is a qcow2 volume backed by the box's disk (a base volume), so making
a machine copies nothing. On a local pool the base volumes (disk, kernel, initrd) are
hard links to the box's files: instant, and atomic. Base volumes are named `box-...`,
machine volumes `vbox-PROJECT-MACHINE.qcow2`.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
import xml.etree.ElementTree as ET
from pathlib import Path

POOL = "vbox"
KINDS = {"disk": "qcow2", "kernel": "vmlinuz", "initrd": "initrd", "hypervisor": "xen"}


def pool_path() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / "images"


REMOTE_POOL_PATH = "/var/lib/vbox/images"
CHUNK = 1024**2


def is_remote(conn) -> bool:
    """Whether the connection's libvirt runs on another host (its files are not ours)."""
    from urllib.parse import urlsplit

    return bool(urlsplit(conn.getURI()).hostname)


def ensure_pool(conn):
    from providers.hosts import find

    pool = find(conn.storagePoolLookupByName, POOL)
    if pool is None:
        if is_remote(conn):
            path = REMOTE_POOL_PATH
        else:
            path = pool_path()
            path.mkdir(parents=True, exist_ok=True)
        xml = f"<pool type='dir'><name>{POOL}</name><target><path>{path}</path></target></pool>"
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)  # makes the folder where it is missing
        pool.setAutostart(True)
    if not pool.isActive():
        pool.create(0)
    return pool


def base_name(box, kind: str) -> str:
    from boxes.store import folder_name

    # an "org/name" box as the store keeps it: a volume name is a file name
    return f"box-{folder_name(box.name)}-{box.version}-{box.digest.removeprefix('sha256:')[:12]}.{KINDS[kind]}"


_BASES = threading.RLock()  # machines of one box made at once: one of them makes its base volumes
_held = threading.local()


@contextmanager
def bases_lock():
    """Base volumes are made, taken into use and removed by one command of this host at a
    time (threads, and processes: a file lock). A machine's volume is made on its base
    under it, and the bases no machine uses are removed under it, so that one project's
    destroy never removes the base another project's new machine is about to use."""
    import fcntl

    from vbox_cli.paths import vbox_home

    with _BASES:
        depth = getattr(_held, "depth", 0)
        if depth == 0:
            home = vbox_home()
            home.mkdir(parents=True, exist_ok=True)
            _held.fd = os.open(home / "bases.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            fcntl.flock(_held.fd, fcntl.LOCK_EX)
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth -= 1
            if _held.depth == 0:
                os.close(_held.fd)  # and the file lock with it


def base_volumes(conn, pool, box) -> dict[str, str]:
    """Paths of the box's disk, kernel and initrd as volumes of the pool (made if missing).
    The caller holds bases_lock() until its volumes on them are made."""
    with bases_lock():
        return _base_volumes(conn, pool, box)


def remove_unused_bases(pool) -> None:
    with bases_lock():
        for name in unused_bases(pool):
            delete_volume(pool, name)


def _base_volumes(conn, pool, box) -> dict[str, str]:
    from providers.hosts import find

    target = Path(ET.fromstring(pool.XMLDesc()).findtext("target/path"))
    if is_remote(conn) or not os.access(target, os.W_OK):
        # another host's pool, or this host's system pool for a user of the libvirt group:
        # libvirtd writes them (what it may, by its storage API)
        return _remote_base_volumes(conn, pool, box)
    paths = {}
    missing = False
    for kind in (k for k in KINDS if k in box.artefacts):
        name = base_name(box, kind)
        vol = find(pool.storageVolLookupByName, name)
        if vol is not None:
            paths[kind] = vol.path()
        else:
            source, dest = box.artefact(kind), target / name
            tmp = target / f".{name}.{os.getpid()}"
            try:
                os.link(source, tmp)
            except OSError:  # another file system: copy
                import shutil

                shutil.copy2(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            missing = True
            paths[kind] = str(dest)
    if missing:
        pool.refresh(0)
    return paths


def _remote_base_volumes(conn, pool, box) -> dict[str, str]:
    """On another host: the box's files go up through libvirt's storage API. They count
    only once the box's `.ok` marker exists, written after every upload completed; an
    upload cut short is made again (a stale one goes with the box's other unused volumes)."""
    from providers.hosts import find

    names = {kind: base_name(box, kind) for kind in KINDS if kind in box.artefacts}
    marker = base_name(box, "disk").rsplit(".", 1)[0] + ".ok"
    if find(pool.storageVolLookupByName, marker) is not None:
        found = {kind: find(pool.storageVolLookupByName, name) for kind, name in names.items()}
        if all(found.values()):
            return {kind: vol.path() for kind, vol in found.items()}
    paths = {kind: upload_volume(conn, pool, name, Path(box.artefact(kind))).path() for kind, name in names.items()}
    upload_volume(conn, pool, marker, b"ok\n")
    return paths


def upload_volume(conn, pool, name: str, content: bytes | Path, mode: int = 0o644):
    """A raw volume holding `content` (bytes, or a local file's), replacing one of that name;
    a secret (a machine's identity) gets mode 0600."""
    delete_volume(pool, name)
    size = len(content) if isinstance(content, bytes) else content.stat().st_size
    vol = create_raw(pool, name, size, mode)
    try:
        with streaming(conn) as stream:
            vol.upload(stream, 0, size, 0)
            if isinstance(content, bytes):
                for offset in range(0, size, CHUNK):
                    send_all(stream, content[offset:offset + CHUNK])
            else:
                with open(content, "rb") as f:
                    while chunk := f.read(CHUNK):
                        send_all(stream, chunk)
    except BaseException:
        delete_volume(pool, name)
        raise
    return vol


def create_raw(pool, name: str, size: int, mode: int):
    """A new raw volume of `size` bytes (sparse: nothing allocated yet)."""
    return pool.createXML(f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
                          f"<allocation unit='bytes'>0</allocation><target><format type='raw'/>"
                          f"<permissions><mode>{mode:04o}</mode></permissions></target></volume>", 0)


@contextmanager
def streaming(conn):
    """A libvirt stream of `conn`, finished when the block ends, aborted when it fails."""
    stream = conn.newStream(0)
    try:
        yield stream
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except Exception:
            pass
        raise


def read_volume(conn, vol, limit: int = 4 * 1024**2) -> bytes:
    """A small volume's bytes (a credential, a seed), read through libvirt's storage API."""
    from vbox_cli.errors import VboxError

    size = vol.info()[1]
    if size > limit:
        raise VboxError(f"the volume {vol.name()} is {size} bytes, more than an identity volume holds")
    data = b""
    with streaming(conn) as stream:
        vol.download(stream, 0, size, 0)
        while chunk := stream.recv(1024**2):
            if not isinstance(chunk, int):
                data += chunk
    return data


def send_all(stream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = stream.send(view.tobytes())
        view = view[sent:]


def overlay_xml(name: str, backing: str, capacity: int) -> str:
    from providers.render import render

    return render("volume.xml.j2", name=name, backing=backing, capacity=capacity)


def create_overlay(pool, name: str, backing: str, capacity: int):
    return pool.createXML(overlay_xml(name, backing, capacity), 0)


def delete_volume(pool, name: str) -> bool:
    import libvirt

    from providers.hosts import find, gone

    vol = find(pool.storageVolLookupByName, name)
    if vol is None:
        return False
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if gone(exc):  # removed meanwhile (by a destroy beside this one)
            return False
        raise
    return True


def unused_bases(pool) -> list[str]:
    """Base volumes that no machine volume is backed by any more."""
    import libvirt

    from providers.hosts import gone

    pool.refresh(0)
    volumes = {}
    for vol in pool.listAllVolumes(0):
        try:
            volumes[vol.name()] = vol
        except libvirt.libvirtError:
            continue
    backing = set()
    for name, vol in volumes.items():
        if name.startswith("vbox-"):
            try:
                path = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
            except libvirt.libvirtError as exc:
                if gone(exc):  # a machine's volume that its own destroy, beside this one, removed
                    continue
                raise
            if path:
                backing.add(Path(path).name)
    used_prefixes = {b.rsplit(".", 1)[0] for b in backing}
    return [n for n in volumes if n.startswith("box-") and n.rsplit(".", 1)[0] not in used_prefixes]
