"""Warm starts: a new KVM machine restored from a memory image of its box, booted once,
instead of booting (20 to 30 s under TCG here; a restore takes about a second).

The image is made the first time a machine of its shape needs it. The box boots as a
transient domain `vbox-warm-KEY` with `vbox.identity=channel` on its command line; its
vbox-identity.service (boxes/guestfiles.py) says "waiting" on the virtio port
org.vbox.identity before the network and sshd start, and libvirt saves the domain there:
its memory image and its disk, an overlay on the box's disk with what the boot wrote, in
/var/lib/vbox/warm/ (not in the vbox pool: a box's base volume there still goes with the
last machine on it, and comes back, the same file, with the next).

A new machine's disk is then a copy of that overlay (on the box's disk, as a cold machine's
is), and libvirt restores the image as the machine's own domain: its domain XML (name, UUID,
disk, MAC, console log, credential, command line) is written into the image's header, the
one place libvirt takes it from without comparing its UUID with the saved one. The host then
sends the machine its identity on the port: the clock, its MAC (the network card's state
came with the image), its machine-id, fresh randomness, and its credential's tmpfiles lines
(its SSH host key, the project's key, its names). Its network and sshd start as in a boot.
A reboot of it is a cold boot: its command line and credential are its own.

Only where that is the machine a cold boot would make: this host's system libvirt, a box
vbox built with the identity service, a kernel beside the disk, the project network only
(an extra network's address is on the command line). Synced folders (virtiofs, which QEMU
cannot save) are plugged in after the restore and named in the identity, which mounts them. One image per box, shape (memory,
vCPUs and their maxima, disk size, accelerator) and libvirt and QEMU version; an image that
fails to restore is removed and the machine boots cold.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from providers.kvm_warm_domain import (  # noqa: F401 - what callers and tests name through here
    CHANNEL,
    CMDLINE_WORD,
    folder_words,
    image_domain,
    image_mac,
    key_of,
    machine_domain,
    read_header,
    write_header,
    _unplug_folders,
)
from vbox_cli.errors import VboxError

FEATURE = "identity-channel"  # in a box's features: it has vbox-identity.service
KEEP = 4  # images kept (about 200 MB each for a 512M machine): the ones used last
ANSWER_TIMEOUT = 60.0  # seconds for a restored machine to apply its identity

def warm_dir() -> Path:
    from vbox_cli.paths import vbox_home

    return vbox_home() / "warm"


def why_not(provider, spec) -> str | None:
    """Why this machine starts cold (None: it can start warm)."""
    if provider.remote or provider.session_mode or provider.group_mode:
        return "not this host's system libvirt"
    if os.environ.get("VBOX_WARM", "1") == "0":
        return "VBOX_WARM=0"
    if FEATURE not in spec.box.meta.features:
        return f"its box {spec.box.name} {spec.box.version} has no identity service"
    if not spec.box.artefact("kernel").is_file() or spec.box.meta.boot.hypervisor:
        return "its box boots from its own bootloader or boots Xen"
    if spec.networks or not spec.network:
        return "it has extra networks, whose addresses its command line names"
    if spec.folders:
        from providers import virtiofs

        if virtiofs.BOX_FEATURE not in spec.box.meta.features or virtiofs.missing():
            return "its synced folders are not served here"
    return None


# -- the identity channel ------------------------------------------------------------------

def _channel(conn, dom):
    import libvirt

    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    dom.openChannel(CHANNEL, stream, 0)
    return stream


class _Lines:
    """Lines read from a non-blocking libvirt stream."""

    def __init__(self, stream):
        self.stream, self.pending = stream, b""

    def next(self, deadline: float, alive) -> str:
        while b"\n" not in self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = self.stream.recv(4096)
            if chunk == -2:  # nothing yet
                if not alive():
                    raise ConnectionError("the domain stopped")
                time.sleep(0.02)
                continue
            if not chunk:
                raise ConnectionError("the port closed")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode(errors="replace").strip()


def _send(stream, data: bytes, deadline: float) -> None:
    while data:
        sent = stream.send(data)
        if sent == -2:
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.01)
            continue
        data = data[sent:]


def identity_message(credential: bytes, image_mac_address: str, mac: str, machine_id: str,
                     folders: list[str] = ()) -> bytes:
    lines = [
        f"time {int(time.time())}",
        f"mac {image_mac_address} {mac}",
        f"machine-id {machine_id}",
        f"random {base64.b64encode(secrets.token_bytes(64)).decode()}",
        f"tmpfiles {base64.b64encode(credential).decode()}",
        *(f"folder {words}" for words in folders),
        "end",
    ]
    return ("\n".join(lines) + "\n").encode()


# -- making an image, and starting from it --------------------------------------------------

@contextlib.contextmanager
def _locked(key: str, wait: bool = True):
    """The image's lock (made, rewritten and restored under it); without `wait`, None
    is yielded when another command holds it."""
    import fcntl

    folder = warm_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / f"{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield lock


def _prune(keep: int = KEEP) -> None:
    """The images beyond the `keep` used last go (a restore rewrites its image's header)."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile
            return 0.0

    saves = sorted(warm_dir().glob("*.save"), key=used, reverse=True)
    for save in saves[keep:]:
        with _locked(save.stem, wait=False) as held:
            if held is not None:
                remove_image(save.stem)


def _paths(key: str) -> dict[str, Path]:
    folder = warm_dir()
    return {"save": folder / f"{key}.save", "log": folder / f"{key}.log", "meta": folder / f"{key}.json",
            "disk": folder / f"{key}.qcow2", "cred": folder / f"{key}.cred"}


def remove_image(key: str, keep_log: bool = False) -> None:
    for kind, path in _paths(key).items():
        if not (keep_log and kind == "log"):
            path.unlink(missing_ok=True)
    _paths(key)["save"].with_suffix(".part").unlink(missing_ok=True)


def make_image(conn, root: ET.Element, key: str, base_disk: str, capacity: int, box, timeout: float) -> None:
    """Boot the box as the image's domain until it waits for its identity (within
    `timeout` seconds, the machine's boot_timeout); save it. A failure leaves nothing but
    the console log of that boot."""
    import json

    import libvirt

    from providers.hosts import find
    from vbox_cli import proc

    paths = _paths(key)
    name = f"vbox-warm-{key}"
    old = find(conn.lookupByName, name)  # a making cut short
    if old is not None:
        with contextlib.suppress(libvirt.libvirtError):
            old.destroy()
    remove_image(key)
    # QEMU reads the image's disk and credential as it boots (libvirt lends it the disk);
    # the folder lets it through to them, and lists nothing
    warm_dir().chmod(0o711)
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", "-F", "qcow2", "-b", base_disk,
              str(paths["disk"]), str(capacity)])
    paths["cred"].write_text("# a warm image's boot: its machine's identity comes on its virtio port\n")
    paths["cred"].chmod(0o644)
    credential = str(paths["cred"])
    disk = str(paths["disk"])
    started = time.monotonic()
    dom = conn.createXML(image_domain(root, key, disk, credential, str(paths["log"])), 0)
    checked = [started]

    def booting() -> bool:
        """Whether it still boots towards its identity service: running, and (its console
        looked at every second) that service has not failed."""
        if not dom.isActive():
            return False
        if time.monotonic() - checked[0] > 1.0:
            checked[0] = time.monotonic()
            try:
                console = paths["log"].read_text(errors="replace")
            except OSError:
                return True
            if "Failed to start vbox-identity" in console or "vbox-identity: no virtio port" in console:
                raise ConnectionError("its identity service failed")
        return True

    try:
        stream = _channel(conn, dom)
        try:
            line = _Lines(stream).next(started + timeout, booting)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        if line != "waiting":
            raise VboxError(f"the warm image's boot said {line!r} on its port, not 'waiting'")
        tmp = paths["save"].with_suffix(".part")
        tmp.unlink(missing_ok=True)
        dom.save(str(tmp))
        paths["meta"].write_text(json.dumps({"box": box.name, "version": box.version, "digest": box.meta.digest,
                                             "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        os.replace(tmp, paths["save"])
    except BaseException as exc:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        remove_image(key, keep_log=True)
        if isinstance(exc, TimeoutError):
            raise VboxError(f"its box's boot did not reach its identity service within {timeout:g} s") from None
        if isinstance(exc, ConnectionError):
            raise VboxError(f"its box's boot did not reach its identity service ({exc})") from None
        if isinstance(exc, libvirt.libvirtError):
            raise VboxError(f"libvirt: {exc.get_error_message()}") from None
        raise


def start(provider, spec) -> tuple[bool, str]:
    """Start the created, never started machine warm: (whether it was; what to tell the user).
    Not started: it boots cold."""
    import libvirt

    from providers.storage import POOL, base_volumes, bases_lock

    if why_not(provider, spec) is not None:
        return False, ""
    conn = provider.conn
    dom = provider._existing(spec.object_name)
    persistent = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    pool = conn.storagePoolLookupByName(POOL)
    volume = pool.storageVolLookupByName(f"{spec.object_name}.qcow2")
    capacity = volume.info()[1]
    key = key_of(persistent, capacity, (conn.getLibVersion(), conn.getVersion()))
    paths = _paths(key)
    said = f"started warm, from a memory image of {spec.box.name} {spec.box.version}"
    with _locked(key):
        with bases_lock():
            base = base_volumes(conn, pool, spec.box)["disk"]
        if not (paths["save"].is_file() and paths["disk"].is_file()):
            started = time.monotonic()
            try:
                make_image(conn, persistent, key, base, capacity, spec.box, spec.machine.boot_timeout)
            except VboxError as exc:  # a faster start missed, not the machine: it boots
                return False, (f"the memory image of its box could not be made ({exc}): it boots "
                               f"(the console of that image's boot: {paths['log']})")
            _prune()
            said += f" made now ({time.monotonic() - started:.0f} s; the next machines of its shape start from it)"
        saved, _, _ = read_header(paths["save"])
        with bases_lock():  # its disk: the image's (on the box's disk, which is there again)
            base_volumes(conn, pool, spec.box)
            tmp = Path(volume.path()).with_name(f".{spec.object_name}.qcow2.warm")
            import shutil

            shutil.copyfile(paths["disk"], tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, volume.path())
        write_header(paths["save"], machine_domain(saved, persistent))
        try:
            conn.restoreFlags(str(paths["save"]), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except libvirt.libvirtError as exc:
            remove_image(key)
            _fresh_disk(pool, spec, base, capacity)
            return False, f"the memory image of its box did not restore ({exc.get_error_message()}): removed; it boots"
    dom = provider._existing(spec.object_name)
    for fs in _unplug_folders(ET.fromstring(ET.tostring(persistent))):  # its virtiofsd start with them
        for child in fs.findall("address") + fs.findall("alias"):  # libvirt gives it a free slot
            fs.remove(child)
        try:
            dom.attachDeviceFlags(ET.tostring(fs, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise VboxError(f"{spec.machine.name}: started warm, its synced folder {fs.find('target').get('dir')} "
                            f"could not be plugged in: {exc.get_error_message()}",
                            hint="`env destroy` it; VBOX_WARM=0 `env up` boots machines cold") from None
    credential = Path(next(e.get("file") for e in persistent.findall("sysinfo/entry"))).read_bytes()
    machine_id = persistent.find("uuid").text.replace("-", "")
    mac = persistent.find("devices/interface/mac").get("address")
    deadline = time.monotonic() + ANSWER_TIMEOUT
    try:
        stream = _channel(conn, dom)
        try:
            _send(stream, identity_message(credential, image_mac(key), mac, machine_id, folder_words(persistent)),
                  deadline)
            lines = _Lines(stream)
            answer = "waiting"
            while answer == "waiting":  # what it said before the host was there to hear it
                answer = lines.next(deadline, dom.isActive)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
    except (TimeoutError, ConnectionError, libvirt.libvirtError) as exc:
        raise VboxError(f"{spec.machine.name}: started warm, it did not take its identity ({exc or 'time-out'})",
                        hint="`env destroy` it; VBOX_WARM=0 `env up` boots machines cold") from None
    if answer != "ok":
        raise VboxError(f"{spec.machine.name}: started warm, it could not apply its identity ({answer})",
                        hint="`env destroy` it; VBOX_WARM=0 `env up` boots machines cold")
    return True, said


def _fresh_disk(pool, spec, base: str, capacity: int) -> None:
    from providers.storage import bases_lock, create_overlay, delete_volume

    with bases_lock():
        delete_volume(pool, f"{spec.object_name}.qcow2")
        create_overlay(pool, f"{spec.object_name}.qcow2", base, capacity)


def sweep(conn) -> None:
    """Image domains whose making was cut short (vbox killed while the box booted): the
    lock of a making in progress is held, theirs is not."""
    import libvirt

    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            name = dom.name()
        except libvirt.libvirtError:
            continue
        if not name.startswith("vbox-warm-"):
            continue
        with _locked(name.removeprefix("vbox-warm-"), wait=False) as held:
            if held is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()


def forget(box) -> int:
    """Remove the memory images made from a box (with the box); how many there were."""
    import json

    folder = warm_dir()
    keys = []
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            made_from = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if (made_from.get("box"), made_from.get("version")) == (box.name, box.version):
            keys.append(meta.stem)
    for key in keys:
        with _locked(key):
            remove_image(key)
    return len(keys)
