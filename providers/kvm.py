"""KVM machines: libvirt QEMU domains booted straight from the box's kernel and initrd.

The disk is a qcow2 overlay volume on the box's disk (providers/storage.py). What a new
machine must have before its first boot (its SSH host key, made by vbox, and the
project's authorized key) goes in as a systemd credential (`tmpfiles.extra`) in an
SMBIOS type 11 string: it needs no seed disk and no cloud-init, and any image with
systemd 252 or later honours it, a user's own qcow2 box included. The address comes
from a DHCP host entry of the project network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from providers.base import NOT_CREATED, RUNNING, STOPPED, MachineSpec
from providers.libvirt_conn import connect, render
from vbox_cli.errors import VboxError

SYSTEM_URI = "qemu:///system"
SESSION_URI = "qemu:///session"
_HOSTFWD = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22")


def choose_uri() -> str:
    """qemu:///system where this user may use it; else the user's own qemu:///session."""
    if os.geteuid() == 0:
        return SYSTEM_URI
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        libvirt.open(SYSTEM_URI).close()
        return SYSTEM_URI
    except libvirt.libvirtError:
        return SESSION_URI


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mac_address(object_name: str) -> str:
    digest = hashlib.sha256(object_name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def tmpfiles_lines(spec: MachineSpec) -> str:
    """tmpfiles.d lines that write the machine's identity at boot (KVM: a credential; Xen: a seed disk)."""
    from providers.guest import identity_files

    lines = [f"d /home/{spec.user}/.ssh 0700 {spec.user} {spec.user} -"]
    for path, (content, mode, owner) in identity_files(spec).items():
        encoded = base64.b64encode(content.encode()).decode()
        lines.append(f"f+~ {path} {mode:04o} {owner} {owner} - {encoded}")
    return "\n".join(lines) + "\n"


def tmpfiles_credential(spec: MachineSpec) -> str:
    """The tmpfiles lines, base64 for the SMBIOS credential."""
    return base64.b64encode(tmpfiles_lines(spec).encode()).decode()


def render_domain(spec: MachineSpec, domain_type: str, paths: dict[str, str], volume: str,
                  ssh_port: int | None = None, console_log: bool = True) -> str:
    """The domain of a new machine (its identity goes in the credential: made once).
    `console_log`: the console is logged to the project's .vbox/console/ (this host only)."""
    from providers.storage import POOL

    short = spec.machine.hostname.split(".")[0]
    linux_cmdline = (f"root=LABEL={spec.box.meta.get('root_label', 'vbox-root')} rw console=ttyS0 "
                     f"systemd.hostname={short} net.ifnames=0")
    kernel, initrd, cmdline = paths["kernel"], paths["initrd"], linux_cmdline
    qemu_args = []
    if ssh_port:
        # session mode: user-mode networking, SSH forwarded from 127.0.0.1
        qemu_args += ["-netdev", f"user,id=vboxnet,hostname={short},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                      "-device", f"virtio-net-pci,netdev=vboxnet,mac={mac_address(spec.object_name)},"
                                 "bus=pci.0,addr=0x1e"]
    if "hypervisor" in paths:
        # A Xen host: Xen is the multiboot kernel; the dom0 kernel (with its command line)
        # and its initrd are multiboot modules, given to QEMU itself (libvirt's <initrd>
        # takes one file). dom0's console is Xen's (hvc0), on com1.
        dom0_mem = min(spec.machine.memory // 2, 2048 * 1024**2) // 1024**2
        kernel, initrd = paths["hypervisor"], ""
        modules = f"{paths['kernel']} {linux_cmdline.replace('console=ttyS0', 'console=hvc0')},{paths['initrd']}"
        qemu_args += ["-initrd", modules]
        cmdline = (f"dom0_mem={dom0_mem}M,max:{dom0_mem}M console=com1 com1=115200,8n1 "
                   f"dom0_max_vcpus={spec.machine.cpus}")
        if domain_type == "qemu":
            # Under TCG: AMD's SVM (HVM guests), with Intel's vendor string. Xen clears SEP
            # from its feature words on AMD CPUs, and TCG has no VME; with neither, libvirt's
            # Xen driver in dom0 cannot name the host CPU ("Cannot find suitable CPU model
            # for given data") and will not start. As QEMU's own option: libvirt drops the
            # vendor of a custom CPU model.
            qemu_args += ["-cpu", "qemu64,vendor=GenuineIntel,svm=on"]
    return render(
        "domain.xml.j2",
        domain_type=domain_type, name=spec.object_name, project=spec.project_id, machine=spec.machine.name,
        memory_kib=spec.machine.memory // 1024, cpus=spec.machine.cpus,
        tmpfiles=tmpfiles_credential(spec),
        kernel=kernel, initrd=initrd, cmdline=cmdline, qemu_args=qemu_args,
        pool=POOL, volume=volume, network=spec.network, mac=mac_address(spec.object_name),
        console_log=spec.console_log if console_log else "", ssh_port=ssh_port,
    )


class KvmProvider:
    name = "kvm"
    host_types = ("qemu",)  # what libvirt's getType() says on a host this provider can use

    def __init__(self, access=None):
        """`access`: another host's libvirt (providers/remote.py); None: this host's."""
        self.access = access
        self.uri = access.uri if access is not None else choose_uri()
        self._conn = None
        self._accel = None

    @property
    def remote(self) -> bool:
        return self.access is not None and self.access.remote

    @property
    def session_mode(self) -> bool:
        from urllib.parse import urlsplit

        return urlsplit(self.uri).path.rstrip("/") == "/session"

    @property
    def uses_project_network(self) -> bool:
        # a session has no bridges: user-mode networking, SSH through a forwarded port
        return not self.session_mode

    @property
    def conn(self):
        if self._conn is None:
            if self.access is None:
                self._conn = connect(self.uri)
            else:
                from providers.remote import open_host

                self._conn = open_host(self.access)
        return self._conn

    def close(self) -> None:
        """Close the connection (to a remote host: before that host goes, see machines._close)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def preflight(self, machine_name: str) -> None:
        """A host named with `host` answers, and is a host of this provider's kind."""
        if self.access is None or self.access.pending:
            return  # this host (`env doctor`), or a machine of this Envfile not up yet (checked later)
        try:
            conn = self.conn
        except VboxError as exc:
            raise VboxError(f"{machine_name}: {exc.message}", hint=exc.hint) from None
        try:
            kind = conn.getType()
        except Exception as exc:  # libvirt.libvirtError, with the message we want
            raise VboxError(f"{machine_name}: the host {self.access.shown} does not answer: {exc}") from None
        if kind.lower() not in self.host_types:
            raise self._wrong_host(machine_name, kind)
        if self.session_mode and self.remote:
            raise VboxError(f"{machine_name}: {self.access.shown} is a user's session on another host; "
                            "its machines have no address vbox could reach",
                            hint="name the host's system libvirt: qemu+ssh://user@HOST/system")

    def _wrong_host(self, machine_name: str, kind: str) -> VboxError:
        return VboxError(f"{machine_name}: {self.access.shown} is a {kind} host, not a QEMU/KVM host",
                         hint='a QEMU URI starts with "qemu": qemu+ssh://root@HOST/system')

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        if not self.session_mode:
            return address, 22
        dom = self._domain(object_name)
        match = _HOSTFWD.search(dom.XMLDesc(0)) if dom is not None else None
        if not match:
            raise VboxError(f"{object_name} has no SSH port forward", hint="destroy it and `env up` again")
        return "127.0.0.1", int(match[1])

    def _domain(self, object_name: str):
        import libvirt

        try:
            return self.conn.lookupByName(object_name)
        except libvirt.libvirtError:
            return None

    # -- state -----------------------------------------------------------------
    def state(self, object_name: str) -> str:
        dom = self._domain(object_name)
        if dom is None:
            return NOT_CREATED
        return RUNNING if dom.isActive() else STOPPED

    def objects(self, prefix: str) -> list[str]:
        return sorted(d.name() for d in self.conn.listAllDomains() if d.name().startswith(prefix))

    # -- acceleration ----------------------------------------------------------
    def accel_for(self, spec: MachineSpec):
        """(accel, reason): what this machine will run with, decided by trying (cached)."""
        from providers.accel import detect
        from vbox_cli.paths import vbox_home

        where = self.access.shown if self.access is not None else self.uri
        mode = f"; libvirt {where}" + (" (user-mode networking, SSH through 127.0.0.1)"
                                       if self.session_mode else "")
        if spec.machine.accel in ("kvm", "tcg"):
            return spec.machine.accel, "set in the Envfile or with --accel" + mode
        if self.remote:
            result = self._remote_accel(spec)
        else:
            result = detect(vbox_home(), spec.box.artefact("kernel"))
        return result.accel, result.reason + mode

    def _remote_accel(self, spec: MachineSpec):
        """Another host's KVM, tried there through its libvirt with the box's kernel (sent
        up first if it is not there yet); once per host and command."""
        from providers.accel import probe_libvirt
        from providers.storage import base_volumes, ensure_pool

        if self._accel is None:
            paths = base_volumes(self.conn, ensure_pool(self.conn), spec.box)
            self._accel = probe_libvirt(self.conn, paths["kernel"])
        return self._accel

    # -- life cycle ------------------------------------------------------------
    def create(self, spec: MachineSpec) -> None:
        from providers.network import add_dhcp_host
        from providers.storage import base_volumes, create_overlay, ensure_pool

        self.destroy(spec.object_name)  # whatever a creation cut short left
        pool = ensure_pool(self.conn)
        paths = base_volumes(self.conn, pool, spec.box)
        volume = f"{spec.object_name}.qcow2"
        check_disk_size(spec)
        create_overlay(pool, volume, paths["disk"], spec.machine.disk)
        ssh_port = free_port() if self.session_mode else None
        if not self.session_mode:
            add_dhcp_host(self.conn, spec.network, mac_address(spec.object_name), spec.address,
                          spec.machine.hostname.split(".")[0])
        accel, _ = self.accel_for(spec)
        xml = render_domain(spec, "kvm" if accel == "kvm" else "qemu", paths, volume, ssh_port,
                            console_log=not self.remote)
        self.conn.defineXML(xml)

    def apply_resources(self, spec: MachineSpec) -> None:
        import libvirt

        dom = self._domain(spec.object_name)
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        memory = str(spec.machine.memory // 1024)
        for tag in ("memory", "currentMemory"):
            element = root.find(tag)
            if element is not None:
                element.text, element.attrib = memory, {"unit": "KiB"}
        root.find("vcpu").text = str(spec.machine.cpus)
        self.conn.defineXML(ET.tostring(root, encoding="unicode"))

    def start(self, spec: MachineSpec) -> None:
        import libvirt

        self.apply_resources(spec)
        log = self.console_log(spec.object_name)
        if log and log.exists():
            log.write_text("")  # the console of this boot only
        try:
            self._domain(spec.object_name).create()
        except libvirt.libvirtError as exc:
            raise VboxError(f"libvirt could not start {spec.object_name}: {exc.get_error_message()}") from None

    def halt(self, object_name: str, timeout: float = 30) -> bool:
        """ACPI shutdown, then power off if the guest has not stopped within timeout."""
        import libvirt

        dom = self._domain(object_name)
        if dom is None or not dom.isActive():
            return True
        try:
            dom.shutdown()
        except libvirt.libvirtError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not dom.isActive():
                return True
            time.sleep(0.2)
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        return False

    def destroy(self, object_name: str) -> None:
        import libvirt

        from providers.network import remove_dhcp_host
        from providers.storage import POOL, delete_volume, unused_bases

        dom = self._domain(object_name)
        if dom is not None:
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
            dom.undefine()
        remove_dhcp_host(self.conn, mac_address(object_name))
        try:
            pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            return
        delete_volume(pool, f"{object_name}.qcow2")
        for name in unused_bases(pool):
            delete_volume(pool, name)

    def console_log(self, object_name: str) -> Path | None:
        dom = self._domain(object_name)
        if dom is None:
            return None
        log = ET.fromstring(dom.XMLDesc(0)).find("devices/serial/log")
        return Path(log.get("file")) if log is not None else None

    def console_command(self, object_name: str) -> list[str]:
        return ["virsh", "-c", self.uri, "console", object_name]

    def leaks(self, prefix: str) -> list[str]:
        return []  # domains and volumes are libvirt objects: providers/leaks.py lists them


def check_disk_size(spec: MachineSpec) -> None:
    """A machine's disk may not be smaller than its box's (the overlay could not hold it)."""
    box_size = _virtual_size(str(spec.box.artefact("disk")))
    if spec.machine.disk < box_size:
        from vbox_cli.envfile.model import format_size

        raise VboxError(f"{spec.machine.name}: disk {format_size(spec.machine.disk)} is smaller than the box's "
                        f"disk ({format_size(box_size)})", hint=f'set disk = "{format_size(box_size)}" or more')


def _virtual_size(path: str) -> int:
    import json

    from vbox_cli import proc

    return int(json.loads(proc.run(["qemu-img", "info", "--output=json", path]).stdout)["virtual-size"])
