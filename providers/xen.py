"""Xen guests: libvirt domains of its libxl driver, on this host or on a remote one.

A guest boots the box's own kernel and initrd (Debian's cloud kernel runs as a PV, PVH
or HVM guest) with a qcow2 overlay on the box's disk, served by QEMU's qdisk backend in
dom0. Xen guests have no SMBIOS strings to carry a systemd credential, so what a new
machine must have before its first boot (its SSH host key, the project's authorized key)
goes on a small raw seed disk: the same tmpfiles.d lines as a KVM machine's credential,
after a "# vbox-seed " header. The box's vbox-seed.service applies it (only under Xen).

The host is `xen:///system`, or the Envfile's `host`: any libvirt URI, or one that names
a machine of the same Envfile (see providers/remote.py). On a remote host the box's
files go up through libvirt's storage API and the project network is made there too.
"""

from __future__ import annotations

from providers.base import MachineSpec
from providers.kvm import KvmProvider, check_disk_size, mac_address, tmpfiles_lines
from providers.libvirt_conn import render
from vbox_cli.errors import VboxError

LOCAL_URI = "xen:///system"
SEED_HEADER = "# vbox-seed "
SEED_VERSION = "1"
MODES = ("pv", "pvh", "hvm")


def seed_image(spec: MachineSpec) -> bytes:
    """The seed disk: its header, the tmpfiles lines, NUL padding to whole 4 KiB blocks."""
    text = f"{SEED_HEADER}{SEED_VERSION}: written by vbox for {spec.object_name}\n" + tmpfiles_lines(spec)
    data = text.encode()
    if len(data) > 1024**2:
        raise VboxError(f"{spec.machine.name}: the seed disk would exceed 1 MiB")
    return data + b"\0" * (-len(data) % 4096)


def kernel_cmdline(spec: MachineSpec, mode: str) -> str:
    short = spec.machine.hostname.split(".")[0]
    console = "ttyS0" if mode == "hvm" else "hvc0"
    return (f"root=LABEL={spec.box.meta.get('root_label', 'vbox-root')} rw console={console} "
            f"systemd.hostname={short} net.ifnames=0")


def render_domain(spec: MachineSpec, mode: str, paths: dict[str, str], disk: str, seed: str) -> str:
    if mode not in MODES:
        raise VboxError(f"{spec.machine.name}: mode {mode!r} is not one of {', '.join(MODES)}")
    return render(
        "xen-domain.xml.j2",
        name=spec.object_name, project=spec.project_id, machine=spec.machine.name, mode=mode,
        memory_kib=spec.machine.memory // 1024, cpus=spec.machine.cpus,
        kernel=paths["kernel"], initrd=paths["initrd"], cmdline=kernel_cmdline(spec, mode),
        disk=disk, seed=seed, network=spec.network, mac=mac_address(spec.object_name),
    )


class XenProvider(KvmProvider):
    """Shares the KVM provider's life cycle (libvirt domains, volumes, DHCP entries);
    differs in the domain it defines and in where its host is."""

    name = "xen"
    host_types = ("xen", "libxl")

    def __init__(self, access=None):
        from providers.remote import HostAccess

        super().__init__(access or HostAccess(uri=LOCAL_URI, shown=LOCAL_URI))

    @property
    def session_mode(self) -> bool:
        return False

    def _wrong_host(self, machine_name: str, kind: str) -> VboxError:
        return VboxError(f"{machine_name}: {self.access.shown} is a {kind} host, not a Xen host",
                         hint='a Xen URI starts with "xen": xen:///system, xen+ssh://root@HOST/system')

    def accel_for(self, spec: MachineSpec):
        return "xen", f"Xen {spec.machine.mode.upper()} guest on {self.access.shown}"

    def ssh_endpoint(self, object_name: str, address: str) -> tuple[str, int]:
        return address, 22

    def create(self, spec: MachineSpec) -> None:
        from providers.network import add_dhcp_host
        from providers.storage import base_volumes, create_overlay, ensure_pool, upload_volume

        self.destroy(spec.object_name)  # whatever a creation cut short left
        pool = ensure_pool(self.conn)
        paths = base_volumes(self.conn, pool, spec.box)
        disk = f"{spec.object_name}.qcow2"
        check_disk_size(spec)
        overlay = create_overlay(pool, disk, paths["disk"], spec.machine.disk)
        seed = upload_volume(self.conn, pool, f"{spec.object_name}.seed", seed_image(spec))
        add_dhcp_host(self.conn, spec.network, mac_address(spec.object_name), spec.address,
                      spec.machine.hostname.split(".")[0])
        xml = render_domain(spec, spec.machine.mode, paths, overlay.path(), seed.path())
        try:
            self.conn.defineXML(xml)
        except Exception as exc:
            raise VboxError(f"{spec.machine.name}: {self.access.shown} refused the domain: {exc}") from None

    def destroy(self, object_name: str) -> None:
        import libvirt

        from providers.storage import POOL, delete_volume

        super().destroy(object_name)
        try:
            pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            return
        delete_volume(pool, f"{object_name}.seed")

    def console_log(self, object_name: str):
        return None  # the console is on the Xen host: `env console` attaches to it

    def console_command(self, object_name: str) -> list[str]:
        return ["virsh", "-c", self.access.uri, "console", object_name]
