"""What KVM machines and Xen guests share: a libvirt domain on a host (this one or a
remote one), a qcow2 overlay volume on the box's disk, a DHCP entry on the project
network. Each subclass renders its own domain and declares its own capabilities.
"""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from providers.base import NOT_CREATED, RUNNING, STOPPED, MachineSpec, ProviderBase
from vbox_cli.errors import VboxError

METADATA_NS = "https://vbox.dev/xmlns/machine/1"  # <vbox:machine project= machine=> in every domain


def _namespace():
    import uuid

    return uuid.uuid5(uuid.NAMESPACE_URL, METADATA_NS)


VBOX_NAMESPACE = _namespace()


def domain_uuid(object_name: str) -> str:
    """A machine's domain UUID, the same for every definition of it. A `defineXML` sent by
    an `env up` that was killed is still carried out by libvirtd (which may take long when
    it re-probes QEMU); with a UUID of its own each time, the next `up`'s definition of the
    same name failed ("already exists with uuid ..."). With this one it updates the domain."""
    import uuid

    return str(uuid.uuid5(VBOX_NAMESPACE, object_name))


def mac_address(object_name: str) -> str:
    digest = hashlib.sha256(object_name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


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


class LibvirtDomainProvider(ProviderBase):
    host_types: tuple[str, ...] = ()  # what libvirt's getType() says on a host this provider can use
    extra_volumes: tuple[str, ...] = ()  # suffixes of a machine's volumes besides its disk (".seed")

    def __init__(self, uri: str, access=None):
        """`access`: another host's libvirt (providers/remote.py); None: this host's."""
        from providers.hosts import host

        self.access = access
        self.uri = uri
        self.host = host(uri, access)

    @property
    def conn(self):
        return self.host.conn

    @property
    def remote(self) -> bool:
        return self.host.remote

    @property
    def network_host(self):
        return self.host

    def close(self) -> None:
        self.host.close()

    # -- checks ------------------------------------------------------------------
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

    def _wrong_host(self, machine_name: str, kind: str) -> VboxError:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------
    def _domain(self, object_name: str):
        from providers.hosts import find

        return find(self.conn.lookupByName, object_name)

    def _existing(self, object_name: str):
        dom = self._domain(object_name)
        if dom is None:
            raise VboxError(f"{object_name} does not exist on {self.host.shown}")
        return dom

    def state(self, object_name: str) -> str:
        dom = self._domain(object_name)
        if dom is None:
            return NOT_CREATED
        return RUNNING if dom.isActive() else STOPPED

    def why_stopped(self, object_name: str) -> str:
        import libvirt

        dom = self._domain(object_name)
        if dom is None:
            return "its libvirt domain is gone"
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            return {
                libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "libvirtd ended it: libvirtd restarted while it was being started",
                libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "libvirt says it crashed",
                libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "it shut itself down",
                libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "libvirt powered it off (virsh destroy?)",
                libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "libvirt could not start it",
            }.get(reason, "libvirt says it is shut off")
        if state == libvirt.VIR_DOMAIN_CRASHED:
            return "libvirt says it crashed"
        return ""

    def stats(self, object_name: str):
        from providers.stats import domain_stats

        dom = self._domain(object_name)
        if dom is None or not dom.isActive():
            return None
        return domain_stats(dom)

    def objects(self, prefix: str) -> list[str]:
        return sorted(d.name() for d in self.conn.listAllDomains() if d.name().startswith(prefix))

    def owned(self, project_id: str) -> dict[str, str]:
        """machine -> domain of that project, by the vbox metadata in each domain."""
        import libvirt

        found = {}
        for dom in self.conn.listAllDomains():
            try:
                if not dom.name().startswith("vbox-"):
                    continue
                element = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))
            except (libvirt.libvirtError, ET.ParseError):
                continue
            if element.get("project") == project_id and element.get("machine"):
                found[element.get("machine")] = dom.name()
        return found

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        return address, 22

    # -- life cycle ------------------------------------------------------------
    def create(self, spec: MachineSpec) -> None:
        from providers.network import add_dhcp_host
        from providers.storage import base_volumes, bases_lock, create_overlay, ensure_pool

        self.destroy(spec.object_name)  # whatever a creation cut short left
        pool = ensure_pool(self.conn)
        check_disk_size(spec)
        with bases_lock():
            paths = base_volumes(self.conn, pool, spec.box)
            overlay = create_overlay(pool, f"{spec.object_name}.qcow2", paths["disk"], spec.machine.disk)
        if spec.network:
            add_dhcp_host(self.conn, spec.network, mac_address(spec.object_name), spec.address,
                          spec.machine.hostname.split(".")[0])
        xml = self._domain_xml(spec, pool, paths, overlay)
        try:
            self.conn.defineXML(xml)
        except Exception as exc:  # libvirt.libvirtError
            raise VboxError(f"{spec.machine.name}: {self.host.shown} refused the domain: {exc}") from None

    def _domain_xml(self, spec: MachineSpec, pool, paths: dict[str, str], overlay) -> str:
        raise NotImplementedError

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
        if log is not None:
            log.unlink(missing_ok=True)  # the console of this boot only (never truncated through a link)
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
        if timeout > 0:
            try:
                dom.shutdown()
            except libvirt.libvirtError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not dom.isActive():
                return True
            time.sleep(0.05)  # one libvirt call, answered from its records (0.1 ms here)
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        return False

    def destroy(self, object_name: str, network_going: bool = False) -> None:
        import libvirt

        from providers.hosts import find
        from providers.network import remove_dhcp_host
        from providers.storage import POOL, delete_volume, remove_unused_bases

        dom = self._domain(object_name)
        if dom is not None:
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
            dom.undefineFlags(self._undefine_flags())
        if not network_going:  # libvirt reapplies the network's firewall for it (38 iptables runs, 0.5 s here)
            remove_dhcp_host(self.conn, mac_address(object_name))
        pool = find(self.conn.storagePoolLookupByName, POOL)
        if pool is None:
            return
        for suffix in (".qcow2", *self.extra_volumes):
            delete_volume(pool, f"{object_name}{suffix}")
        remove_unused_bases(pool)

    def _undefine_flags(self) -> int:
        """What else goes with the domain's definition (its snapshots' metadata, ...)."""
        return 0

    def console_log(self, object_name: str) -> Path | None:
        dom = self._domain(object_name)
        if dom is None:
            return None
        log = ET.fromstring(dom.XMLDesc(0)).find("devices/serial/log")
        return Path(log.get("file")) if log is not None else None

    def console_command(self, object_name: str) -> list[str]:
        return ["virsh", "-c", self.host.access.uri if self.host.access else self.uri, "console", object_name]

    def leaks(self, prefix: str) -> list[str]:
        return []  # domains and volumes are libvirt objects: providers/leaks.py lists them
