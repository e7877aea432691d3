"""An LXC machine that `env migrate` moved to another host: a domain of libvirt's LXC
driver there (a machine of the Envfile from the kvm-host box, booted as a KVM machine,
whose own kernel gives libvirt the cgroups it needs), booting the machine's whole root
tree from an ext4 image volume (providers/lxc_move.py). vbox makes LXC machines on this
host only: one gets here by `env migrate`, and leaves by it (back to this host, or on to
another such host), cold both ways.
"""

from __future__ import annotations

import time
from pathlib import Path

from providers.base import NOT_CREATED, RUNNING, Capability, MachineSpec
from providers.libvirt_domain import LibvirtDomainProvider, domain_uuid
from providers.lxc_config import mac_address
from providers.lxc_move import IMAGE_SUFFIX, volume_name
from vbox_cli.errors import VboxError

ONLY_HERE = "it runs on another host's libvirt LXC driver, where vbox only starts, stops, moves and removes it"


class LxcGuestProvider(LibvirtDomainProvider):
    name = "lxc"
    label = "LXC container"
    needs = ("rootfs",)
    host_types = ("lxc",)
    extra_volumes = (IMAGE_SUFFIX,)
    moves_cold = "vbox does not checkpoint a container's processes to another host"  # env migrate: always

    def __init__(self, access):
        super().__init__(access.uri, access)

    def _wrong_host(self, machine_name: str, kind: str) -> VboxError:
        return VboxError(f"{machine_name}: {self.access.shown} is a {kind} host, not libvirt's LXC driver",
                         hint="an LXC machine moves to lxc+ssh://HOST/system, or to a machine of the Envfile "
                              "made from the kvm-host box (as a KVM machine)")

    def unsupported(self, capability: Capability, spec: MachineSpec | None = None) -> str | None:
        if capability in (Capability.PORTS, Capability.FOLDERS, Capability.NETWORKS, Capability.SNAPSHOTS,
                          Capability.LIVE, Capability.SUSPEND, Capability.ACCEL):
            return ONLY_HERE
        return super().unsupported(capability, spec)

    def create(self, spec: MachineSpec) -> None:
        raise VboxError(f"{spec.machine.name}: vbox makes LXC machines on this host only",
                        hint=f"`env migrate {spec.machine.name} --to HOST` moves one to another host")

    def console_log(self, object_name: str):
        return None  # its console is on that host: `env console` attaches to it

    def define(self, spec: MachineSpec, image_path: str) -> None:
        """The machine's domain there, on the volume `image_path`, in the network of `spec`."""
        from providers.render import render

        xml = render("lxc-domain.xml.j2", name=spec.object_name, uuid=domain_uuid(spec.object_name),
                     project=spec.project_id, machine=spec.machine.name, memory_kib=spec.machine.memory // 1024,
                     cpus=spec.machine.cpus, image=image_path, network=spec.network,
                     mac=mac_address(spec.object_name))
        try:
            self.conn.defineXML(xml)
        except Exception as exc:  # libvirt.libvirtError
            raise VboxError(f"{spec.machine.name}: {self.host.shown} refused the container: {exc}") from None

    def migrate(self, spec: MachineSpec, target, target_spec: MachineSpec, cold: bool, progress=None):
        """Back to this host's LXC (`target`: an LxcProvider), or on to another libvirt LXC
        host: stopped, its image copied, defined there; started by the caller."""
        from providers import lxc_move
        from providers.migration import Migration

        began = time.monotonic()
        obj = spec.object_name
        if self.state(obj) == RUNNING and not self.halt(obj, 60):
            raise VboxError(f"{spec.machine.name} did not shut down in 60 s: nothing was moved",
                            hint=f"`env halt {spec.machine.name}` and migrate it again")
        vol = self._image(obj)
        if isinstance(target, LxcGuestProvider):
            copied = target.receive(target_spec, self.conn, vol, progress)
        else:
            copied = target.adopt(target_spec, lambda image: lxc_move.download_sparse(self.conn, vol, image,
                                                                                     progress))
        self.destroy(obj)
        return Migration("cold", time.monotonic() - began, copied=copied)

    def receive(self, spec: MachineSpec, source_conn, source_vol, progress=None) -> int:
        """A moved machine's image volume copied from another host into this one's pool,
        and its domain defined on it. Returns the bytes copied."""
        from providers.migration import copy_volume
        from providers.storage import ensure_pool

        pool = ensure_pool(self.conn)
        self.destroy(spec.object_name)  # what a move cut short left here
        copied = copy_volume(source_conn, source_vol, self.conn, pool, volume_name(spec.object_name), progress)
        self.define(spec, pool.storageVolLookupByName(volume_name(spec.object_name)).path())
        return copied

    def receive_image(self, spec: MachineSpec, image: Path, progress=None) -> int:
        """A moved machine's image (a local file) sent into this host's pool, and its domain
        defined on it. Returns the bytes of data sent."""
        from providers import lxc_move
        from providers.storage import create_raw, delete_volume, ensure_pool

        pool = ensure_pool(self.conn)
        self.destroy(spec.object_name)  # what a move cut short left here
        name = volume_name(spec.object_name)
        vol = create_raw(pool, name, image.stat().st_size, 0o600)
        try:
            sent = lxc_move.upload_sparse(self.conn, vol, image, progress)
            self.define(spec, vol.path())
        except BaseException:
            delete_volume(pool, name)
            raise
        return sent

    def _image(self, object_name: str):
        from providers.hosts import find
        from providers.storage import POOL

        pool = find(self.conn.storagePoolLookupByName, POOL)
        vol = find(pool.storageVolLookupByName, volume_name(object_name)) if pool is not None else None
        if vol is None or self.state(object_name) == NOT_CREATED:
            raise VboxError(f"{object_name} has no root image on {self.host.shown}")
        return vol
