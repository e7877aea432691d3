"""KVM machines: libvirt QEMU domains booted straight from the box's kernel and initrd.

The disk is a qcow2 overlay volume on the box's disk (providers/storage.py). What a new
machine must have before its first boot (its SSH host key, made by vbox, and the
project's authorized key) goes in as a systemd credential (`tmpfiles.extra`) through
QEMU's fw_cfg, from a 0600 volume beside the disk: only its path is on QEMU's command
line and in the domain XML, never the key (libvirt lets the QEMU user read the file
while the guest runs). It needs no seed disk and no cloud-init: systemd 252 or later
imports it, a user's own qcow2 box included. The address comes from a DHCP host entry
of the project network.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

from providers.base import Capability, MachineSpec, NeedsRestart
from providers.hosts import SESSION_URI, SYSTEM_URI, open_libvirt
from providers.kvm_domain import apply_networks, render_domain, set_resources
from providers.libvirt_domain import LibvirtDomainProvider, mac_address
from providers.ports import LocalPorts
from vbox_cli.errors import VboxError

__all__ = ["KvmProvider"]
_HOSTFWD = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22")


def choose_uri() -> str:
    """qemu:///system where this user may use it; else the user's own qemu:///session."""
    if os.geteuid() == 0:
        return SYSTEM_URI
    try:
        open_libvirt(SYSTEM_URI).close()
        return SYSTEM_URI
    except VboxError:
        return SESSION_URI


def _probe_kernel(box) -> Path | None:
    """A kernel to find out whether KVM works with: the box's, or (a box that boots from its
    disk) another box's in the store; None: a boot sector, which says less."""
    if box.artefact("kernel").is_file():
        return box.artefact("kernel")
    from boxes.store import BoxStore

    kernels = [b.artefact("kernel") for b in BoxStore().boxes() if b.artefact("kernel").is_file()]
    return kernels[0] if kernels else None


def _not_ours(box) -> str:
    """Why a box lacks what vbox's own boxes have."""
    return "built by an earlier vbox" if box.meta.recipe else "not a box vbox built: it has none of vbox's services"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KvmProvider(LocalPorts, LibvirtDomainProvider):
    name = "kvm"
    label = "KVM machine"
    needs = ("disk",)  # a kernel beside it is used when there is one
    host_types = ("qemu",)
    extra_volumes = (".cred", ".seed")  # the identity credential; a cloud image's NoCloud seed

    def __init__(self, access=None):
        super().__init__(access.uri if access is not None else choose_uri(), access)
        self._accel = None

    @property
    def session_mode(self) -> bool:
        return urlsplit(self.uri).path.rstrip("/") == "/session"

    @property
    def group_mode(self) -> bool:
        """This host's system libvirt, used by a user of its libvirt group (not root): the
        project network and libvirt's objects as for root; what needs root on this host
        itself (NAT rules, virtiofsd's mounts, files libvirt writes as root) is not done."""
        return os.geteuid() != 0 and not self.session_mode and not self.remote

    @property
    def network_host(self):
        # a user's session has no bridges: user-mode networking, SSH through a forwarded port
        return None if self.session_mode else self.host

    def _unsupported(self, capability: Capability, spec: MachineSpec | None) -> str | None:
        if capability == Capability.PORTS and self.session_mode:
            return "a user's libvirt session has no project network to forward into (run as root, or ask for " \
                   "the libvirt group)"
        if capability == Capability.PORTS and self.group_mode:
            return "forwarded ports are NAT rules of this host's kernel, which only root may set (run as root)"
        if capability == Capability.PORTS and self.remote and not (self.access and self.access.machine):
            return f"it runs on {self.host.shown}, where its network is"  # (on a machine of the Envfile: through it)
        if capability == Capability.FOLDERS:
            return self._no_folders(spec)
        if capability == Capability.NETWORKS and self.session_mode:
            return "a user's libvirt session has no bridges (run as root, or ask for the libvirt group)"
        if capability == Capability.NETWORKS and self.remote:
            return f"it runs on {self.host.shown}, whose bridges vbox does not manage"
        return None

    def joins_networks(self) -> bool:
        return True

    def _no_folders(self, spec: MachineSpec | None) -> str | None:
        from providers import virtiofs

        if self.remote:
            return f"it runs on {self.host.shown}, which does not see this project folder"
        if self.session_mode:
            return "a user's libvirt session cannot run virtiofsd, which must be root here"
        if self.group_mode:
            return "virtiofsd and the mounts it serves (owners mapped) must be root's here (run as root)"
        if why := virtiofs.missing():
            return why
        if spec is not None and spec.box.meta.boot.hypervisor:
            return "its box boots Xen, and vbox has not tried virtiofs under a Xen dom0"
        if spec is not None and virtiofs.BOX_FEATURE not in spec.box.meta.features:
            return (f"its box {spec.box.name} {spec.box.version} does not mount them ({_not_ours(spec.box)})"
                    + (f": `env box build {spec.box.name}` makes one that does" if spec.box.meta.recipe else ""))
        return None

    def preflight(self, machine_name: str) -> None:
        super().preflight(machine_name)
        if self.access is not None and not self.access.pending and self.session_mode and self.remote:
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

    # -- acceleration ----------------------------------------------------------
    def accel_for(self, spec: MachineSpec):
        """(accel, reason): what this machine will run with, decided by trying (cached)."""
        from providers.accel import detect
        from vbox_cli.paths import vbox_home

        mode = f"; libvirt {self.host.shown}" + (" (user-mode networking, SSH through 127.0.0.1)"
                                                  if self.session_mode else "")
        if spec.machine.accel in ("kvm", "tcg"):
            return spec.machine.accel, "set in the Envfile or with --accel" + mode
        if self.remote:
            result = self._remote_accel(spec)
        elif self.group_mode:  # the system libvirt's QEMU runs it, not this user: asked through libvirt
            from vbox_cli.paths import SYSTEM_HOME

            result = detect(vbox_home(), _probe_kernel(spec.box), prober=lambda kernel: self._remote_accel(spec),
                            trusted=SYSTEM_HOME)
        else:
            result = detect(vbox_home(), _probe_kernel(spec.box))
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

    # -- synced folders ----------------------------------------------------------
    @staticmethod
    def _shares_dir(object_name: str = "") -> Path:
        """Where the folders served to a machine are mounted while it starts."""
        from vbox_cli.paths import vbox_home

        return vbox_home() / "shares" / object_name

    def folder_event_source(self, object_name: str) -> str | None:
        # virtiofs tells the guest nothing of changes made here; its virtiofsd serve from here
        return f"{self._shares_dir(object_name)}/"

    def update_folders(self, spec: MachineSpec) -> str | None:
        """A running machine sees the folders it was started with: a change needs a restart."""
        from providers import virtiofs

        dom = self._domain(spec.object_name)
        if dom is None or not dom.isActive():
            return None
        if not self.remote:  # a start killed once the domain ran left its serving mounts: its virtiofsd have theirs
            virtiofs.release(self._shares_dir(spec.object_name))
        if virtiofs.running_digest(dom.XMLDesc(0)) == virtiofs.digest(spec):
            return None
        raise NeedsRestart(f"{spec.machine.name}: the synced folders in the Envfile changed; a {self.label} "
                           "sees them after a restart",
                           hint=f"`env up --restart-if-needed {spec.machine.name}` or `env reload {spec.machine.name}`")

    def start(self, spec: MachineSpec) -> str:
        """Start the machine; what to tell the user of how ("" for nothing)."""
        import libvirt

        from providers import virtiofs

        dom = self._domain(spec.object_name)
        new = self._is_new(dom)
        if new and dom.isActive():  # a first start cut short: from the top
            try:
                dom.destroy()
            except libvirt.libvirtError:
                if dom.isActive():  # not one that went meanwhile (libvirtd ends a restore it finds cut short)
                    raise
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        virtiofs.apply(root, spec, self._shares_dir(spec.object_name))
        if any(net.address for net in spec.networks) and "static-addresses" not in spec.box.meta.features:
            raise VboxError(f"{spec.machine.name}: its box {spec.box.name} {spec.box.version} cannot take a static "
                            f"address on an extra network ({_not_ours(spec.box)})",
                            hint=(f"`env box build {spec.box.name}` makes one that can, or " if spec.box.meta.recipe
                                  else "") + "leave `address` out (DHCP)")
        apply_networks(root, spec)
        try:
            self.conn.defineXML(ET.tostring(root, encoding="unicode"))
        except libvirt.libvirtError as exc:
            raise VboxError(f"{spec.machine.name}: {self.host.shown} refused the synced folders: "
                            f"{exc.get_error_message()}") from None
        with virtiofs.served(spec, self._shares_dir(spec.object_name)):
            said, started = "", False
            if new:  # a new machine: from its box's warm image where it can
                from providers import kvm_warm

                self.apply_resources(spec)
                started, said = kvm_warm.start(self, spec)
            if not started:
                super().start(spec)
        if new:
            self._not_new(dom)
        return said

    # A new machine's domain is marked until its first start is done (its identity given):
    # one found running with the mark is a first start cut short, which the next starts again.
    _NEW = ("https://vbox.dev/xmlns/new/1", "vboxnew")

    def create(self, spec: MachineSpec) -> None:
        import libvirt

        super().create(spec)
        self._existing(spec.object_name).setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<new/>", self._NEW[1],
                                                     self._NEW[0], libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def _is_new(self, dom) -> bool:
        import libvirt

        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, self._NEW[0], libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError:
            return False
        return True

    def _not_new(self, dom) -> None:
        import libvirt

        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, self._NEW[0],
                        libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def state(self, object_name: str) -> str:
        from providers.base import RUNNING, STOPPED

        state = super().state(object_name)
        if state == RUNNING and self._is_new(self._domain(object_name)):
            return STOPPED  # its first start was cut short (killed before its identity was given): not usable
        return state

    def destroy(self, object_name: str, network_going: bool = False) -> None:
        from providers import virtiofs

        super().destroy(object_name, network_going)
        if not self.remote:
            virtiofs.release(self._shares_dir(object_name))
        if not (self.remote or self.session_mode or self.group_mode):
            from providers import kvm_warm

            kvm_warm.sweep(self.conn)

    def leaks(self, prefix: str) -> list[str]:
        from providers import virtiofs

        return [] if self.remote else virtiofs.leftovers(self._shares_dir(), prefix)

    # -- resources: at a start, and live ---------------------------------------------
    def apply_resources(self, spec: MachineSpec) -> None:
        """Before a start: memory (with its maximum and the balloon), vCPUs (with theirs),
        as the spec says; a machine made by an earlier vbox gets its balloon here."""
        import libvirt

        dom = self._domain(spec.object_name)
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        set_resources(root, spec, self._host_size())
        self.conn.defineXML(ET.tostring(root, encoding="unicode"))

    def change_live(self, spec: MachineSpec, was: dict):
        from providers.kvm_live import change_live

        return change_live(self._existing(spec.object_name), spec, was, self.label)

    # -- suspend: libvirt's managed save ------------------------------------------------
    def suspend(self, object_name: str) -> None:
        """Its memory and device state saved by libvirt (managed save) and QEMU stopped:
        the host's memory is freed; the next start resumes it. QEMU cannot save a machine
        with a virtiofs folder (vhost-user-fs is not migratable)."""
        import libvirt

        dom = self._existing(object_name)
        if ET.fromstring(dom.XMLDesc(0)).find("devices/filesystem/driver[@type='virtiofs']") is not None:
            raise VboxError(f"{object_name} has synced folders (virtiofs), whose state QEMU cannot save: it cannot "
                            "be suspended", hint="`env halt` it, or set folders = [] for it")
        try:
            dom.managedSave(0)
        except libvirt.libvirtError as exc:
            raise VboxError(f"libvirt could not suspend {object_name}: {exc.get_error_message()}") from None

    def suspended(self, object_name: str) -> bool:
        dom = self._domain(object_name)
        return dom is not None and not dom.isActive() and bool(dom.hasManagedSaveImage(0))

    # -- migration (providers/migration.py) ---------------------------------------------
    def migrate(self, spec: MachineSpec, target: "KvmProvider", target_spec: MachineSpec, cold: bool,
                progress=None):
        """To `target`'s host: live while it runs, cold when it is stopped or `cold`
        (providers/migration.py)."""
        from providers.migration import move

        return move(self, spec, target, target_spec, cold, progress)

    # -- snapshots (providers/disk_snapshots.py) ----------------------------------
    def _undefine_flags(self) -> int:
        import libvirt

        return libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE

    def snapshots(self, object_name: str):
        from providers import disk_snapshots

        dom = self._domain(object_name)
        return [] if dom is None else disk_snapshots.snapshots(dom)

    def snapshot_save(self, object_name: str, name: str):
        from providers import disk_snapshots

        return disk_snapshots.save(self._existing(object_name), name, f"{object_name}.qcow2")

    def snapshot_restore(self, object_name: str, name: str) -> None:
        from providers import disk_snapshots

        disk_snapshots.restore(self._existing(object_name), name)

    def snapshot_delete(self, object_name: str, name: str) -> None:
        from providers import disk_snapshots

        disk_snapshots.delete(self._existing(object_name), name)

    # -- life cycle ------------------------------------------------------------
    def _domain_xml(self, spec: MachineSpec, pool, paths: dict[str, str], overlay) -> str:
        from providers import cloudinit
        from providers.guest import tmpfiles_lines
        from providers.storage import upload_volume

        ssh_port = free_port() if self.session_mode else None
        accel, _ = self.accel_for(spec)
        credential = upload_volume(self.conn, pool, f"{spec.object_name}.cred", tmpfiles_lines(spec).encode(),
                                   mode=0o600)
        seed = None
        if spec.box.meta.identity == cloudinit.IDENTITY:  # a cloud image: cloud-init reads its seed
            seed = upload_volume(self.conn, pool, f"{spec.object_name}{cloudinit.VOLUME_SUFFIX}",
                                 cloudinit.seed_image(spec, mac_address(spec.object_name)), mode=0o600).name()
        return render_domain(spec, "kvm" if accel == "kvm" else "qemu", paths, overlay.name(), credential.path(),
                             ssh_port, console_log=not (self.remote or self.group_mode), seed=seed,
                             host=self._host_size())

    def identity_volume(self, suffix: str, data: bytes, spec: MachineSpec) -> bytes | None:
        """A volume of extra_volumes (`data`) as it goes to `spec`'s network on a move
        (providers/migration.py): the credential with that network's resolver; None: copied
        as it is (a cloud image's seed)."""
        from providers.guest import retarget_tmpfiles

        return retarget_tmpfiles(data.decode(), spec).encode() if suffix == ".cred" else None

    def _host_size(self) -> tuple[int, int]:
        info = self.conn.getInfo()  # [model, memory MiB, CPUs, ...]
        return info[1] * 1024**2, info[2]
