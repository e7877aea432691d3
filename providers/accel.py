"""Does KVM really work on this host, or will QEMU run guests under TCG?

A present /dev/kvm proves nothing (under nested virtualisation a KVM guest can hang),
so decide by trying: boot a Linux kernel under KVM with no root file system and
`panic=-1`, and see whether QEMU exits (the kernel ran to its panic) within a bound. The
answer is cached per host boot and QEMU binary.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
CACHE_FILE = "accel.json"
# A kernel that works under KVM reaches its panic in about a second (under TCG, about
# two). A KVM guest that has not got there in 15 s is hung.
KVM_TIMEOUT = 15.0

# 16-bit boot sector: write 1 to the isa-debug-exit port; QEMU exits with status 3.
_BOOT_SECTOR = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])


@dataclass(frozen=True)
class Accel:
    accel: str  # "kvm" or "tcg"
    reason: str
    probe_seconds: float = 0.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _qemu_identity() -> str:
    import shutil

    path = shutil.which(QEMU)
    if not path:
        return ""
    return f"{path}:{os.stat(path).st_mtime_ns}"


def _cached(cache: Path, key: dict) -> Accel | None:
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return Accel(**data["result"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def known(cache_dir: Path) -> Accel | None:
    """What the probe of this boot and this QEMU found, if one cached it in `cache_dir`."""
    return _cached(cache_dir / CACHE_FILE, {"boot_id": _boot_id(), "qemu": _qemu_identity()})


def detect(cache_dir: Path | None, kernel: Path | None = None, prober=None,
           trusted: Path | None = None) -> Accel:
    """The accelerator to use, from the cache when this boot and QEMU were probed already.
    `prober(kernel)` asks the question (default: a QEMU of this process's own);
    `trusted`: another cache to believe first (a user of the system libvirt reads root's,
    whose QEMU is the one that runs her machines)."""
    # whether KVM works is the host's property: the kernel used to find out does not matter
    key = {"boot_id": _boot_id(), "qemu": _qemu_identity()}
    cache = cache_dir / CACHE_FILE if cache_dir else None
    for known in (trusted / CACHE_FILE if trusted else None, cache):
        if known and (found := _cached(known, key)) is not None:
            return found
    result = (prober or probe)(kernel)
    if cache and kernel:  # a boot sector alone can run where a kernel hangs: not final
        from vbox_cli.files import atomic_write

        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps({"key": key, "result": asdict(result)}))
        except OSError:
            pass
    return result


def probe(kernel: Path | None = None, timeout: float = KVM_TIMEOUT) -> Accel:
    if not _qemu_identity():
        return Accel("tcg", f"{QEMU} is not installed")
    if not os.path.exists("/dev/kvm"):
        return Accel("tcg", "no /dev/kvm on this host")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "/dev/kvm is not readable and writable by this user")
    started = time.monotonic()
    ok, why = run_guest("kvm", kernel, timeout)
    seconds = round(time.monotonic() - started, 1)
    if ok and kernel:
        return Accel("kvm", f"a KVM guest booted a kernel in {seconds} s", seconds)
    if ok:
        return Accel("kvm", "a KVM guest ran a boot sector (not proof: build a box for a kernel probe)", seconds)
    return Accel("tcg", f"/dev/kvm is present but {why}", seconds)


def run_guest(accel: str, kernel: Path | None, timeout: float) -> tuple[bool, str]:
    """Run the probe guest under `accel`; (True, "") if it ran to its end within timeout."""
    with tempfile.TemporaryDirectory(prefix="vbox-accel-") as tmp:
        argv = [QEMU, "-accel", accel, "-machine", "pc", "-m", "256", "-display", "none", "-nodefaults",
                "-no-user-config", "-no-reboot", "-serial", f"file:{tmp}/console.log"]
        if kernel:
            argv += ["-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
            expected = 0
        else:
            image = Path(tmp) / "probe.img"
            image.write_bytes(_BOOT_SECTOR + bytes(510 - len(_BOOT_SECTOR)) + b"\x55\xaa")
            argv += ["-drive", f"file={image},format=raw,if=ide",
                     "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
            expected = 3
        from vbox_cli import proc
        from vbox_cli.proc import CommandTimeout

        try:
            # a KVM guest may hang for ever: it must not outlive a vbox that is killed
            process = proc.run(argv, check=False, timeout=timeout, die_with_parent=True)
        except CommandTimeout:  # killed
            return False, f"a {accel.upper()} guest hung (no progress in {timeout:g} s)"
        if process.returncode != expected:
            detail = (process.stderr or "").strip().splitlines()
            return False, f"QEMU with {accel} failed: {detail[-1] if detail else f'exit status {process.returncode}'}"
        if kernel:
            console = Path(tmp, "console.log").read_text(errors="replace")
            if "Kernel panic" not in console:
                return False, f"a {accel.upper()} guest stopped before its kernel ran"
        return True, ""


PROBE_PREFIX = "vbox-accel-probe-"


def probe_libvirt(conn, kernel: str, timeout: float = KVM_TIMEOUT, virt_type: str = "kvm") -> Accel:
    """The same question asked of another host's libvirt (its QEMU, its /dev/kvm): a
    transient KVM domain boots `kernel` (a path on that host), and its console, read
    through libvirt, must show the kernel's panic within `timeout`. (`virt_type` "qemu"
    asks it of TCG: the tests check the probe itself with it.)"""
    import secrets
    import threading

    import libvirt

    from providers.render import render

    try:
        conn.getDomainCapabilities(None, "x86_64", None, virt_type, 0)
    except libvirt.libvirtError as exc:
        return Accel("tcg", f"the host's libvirt offers no KVM ({exc.get_error_message()})")
    name = PROBE_PREFIX + secrets.token_hex(4)
    xml = render("accel-probe.xml.j2", domain_type=virt_type, name=name, kernel=kernel)
    label = "KVM" if virt_type == "kvm" else virt_type.upper()
    started = time.monotonic()
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        return Accel("tcg", f"the host could not start a {label} guest: {exc.get_error_message()}")
    seen = threading.Event()
    stream, hung = None, False
    try:
        stream = conn.newStream(0)
        dom.openConsole(None, stream, 0)
        dom.resume()

        def read() -> None:
            console = b""
            while not seen.is_set():
                try:
                    data = stream.recv(4096)
                except libvirt.libvirtError:
                    return
                if isinstance(data, int) and data == -2:  # nothing yet (non-blocking)
                    time.sleep(0.05)
                    continue
                if not data or isinstance(data, int):
                    return  # the domain is gone
                console = (console + data)[-65536:]
                if b"Kernel panic" in console:
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        hung = reader.is_alive()
    finally:
        try:
            dom.destroy()  # ends the console stream, and the reader with it
        except libvirt.libvirtError:
            pass  # it rebooted after its panic: gone
    if stream is not None:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
    seconds = round(time.monotonic() - started, 1)
    if seen.is_set():
        return Accel(virt_type if virt_type == "kvm" else "tcg",
                     f"a {label} guest on the host booted a kernel in {seconds} s", seconds)
    if hung:
        return Accel("tcg", f"the host offers {label} but a {label} guest there hung (no progress in {timeout:g} s)",
                     seconds)
    return Accel("tcg", f"the host offers {label} but a {label} guest there stopped before its kernel ran",
                 seconds)
