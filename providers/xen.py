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
from providers.guest import RESOLVER_WORD, retarget_tmpfiles, static_resolver, tmpfiles_lines
from providers.libvirt_domain import LibvirtDomainProvider, domain_uuid, mac_address
from providers.registry import REGISTRY
from providers.render import render
from vbox_cli.errors import VboxError

LOCAL_URI = REGISTRY["xen"].default_uri
SEED_HEADER = "# vbox-seed "
SEED_VERSION = "1"
MODES = ("pv", "pvh", "hvm")


def seed_image(spec: MachineSpec) -> bytes:
    """The seed disk: its header, the tmpfiles lines, NUL padding to whole 4 KiB blocks."""
    text = f"{SEED_HEADER}{SEED_VERSION}: written by vbox for {spec.object_name}\n" + tmpfiles_lines(spec)
    data = text.encode()
    if len(data) > 1024**2:
        raise VboxError(f"{spec.machine.name}: the seed disk would exceed 1 MiB")
    return _padded(data)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4096)


def kernel_cmdline(spec: MachineSpec, mode: str) -> str:
    short = spec.machine.hostname.split(".")[0]
    console = "ttyS0" if mode == "hvm" else "hvc0"
    return (f"root=LABEL={spec.box.meta.boot.root_label} rw console={console} "
            f"systemd.hostname={short} net.ifnames=0" + (f" {RESOLVER_WORD}" if static_resolver(spec) else ""))


def render_domain(spec: MachineSpec, mode: str, paths: dict[str, str], disk: str, seed: str) -> str:
    if mode not in MODES:
        raise VboxError(f"{spec.machine.name}: mode {mode!r} is not one of {', '.join(MODES)}")
    return render(
        "xen-domain.xml.j2",
        name=spec.object_name, uuid=domain_uuid(spec.object_name),
        project=spec.project_id, machine=spec.machine.name, mode=mode,
        memory_kib=spec.machine.memory // 1024, cpus=spec.machine.cpus,
        kernel=paths["kernel"], initrd=paths["initrd"], cmdline=kernel_cmdline(spec, mode),
        disk=disk, seed=seed, network=spec.network, mac=mac_address(spec.object_name),
    )


class XenProvider(LibvirtDomainProvider):
    """A libvirt domain of the libxl driver, with its identity on a seed disk."""

    name = "xen"
    label = "Xen guest"
    needs = ("disk", "kernel", "initrd")  # PV guests: no bootloader
    host_types = ("xen", "libxl")
    extra_volumes = (".seed",)
    # env migrate: libxl's migration (LIBXL_MIGRATION_FLAGS in libvirt) sends memory, not disks
    moves_cold = ("libvirt's Xen driver moves a running guest's memory only, and its disk is on its own "
                  "host's storage, which the other host does not share")

    def __init__(self, access=None):
        from providers.remote import HostAccess

        access = access or HostAccess(uri=LOCAL_URI, shown=LOCAL_URI)
        super().__init__(access.uri, access)

    def _wrong_host(self, machine_name: str, kind: str) -> VboxError:
        return VboxError(f"{machine_name}: {self.access.shown} is a {kind} host, not a Xen host",
                         hint='a Xen URI starts with "xen": xen:///system, xen+ssh://root@HOST/system')

    def accel_for(self, spec: MachineSpec):
        return "xen", f"Xen {spec.machine.mode.upper()} guest on {self.access.shown}"

    def _domain_xml(self, spec: MachineSpec, pool, paths: dict[str, str], overlay) -> str:
        from providers.storage import upload_volume

        seed = upload_volume(self.conn, pool, f"{spec.object_name}.seed", seed_image(spec), mode=0o600)
        return render_domain(spec, spec.machine.mode, paths, overlay.path(), seed.path())

    def migrate(self, spec: MachineSpec, target: "XenProvider", target_spec: MachineSpec, cold: bool,
                progress=None):
        """To `target`'s Xen host, cold (providers/migration.py): shut down, its disk's own
        layer and seed copied, defined there; the caller starts it."""
        from providers.migration import move

        return move(self, spec, target, target_spec, True, progress)

    def identity_volume(self, suffix: str, data: bytes, spec: MachineSpec) -> bytes | None:
        """The seed (`data`) with `spec`'s network's resolver, on a move (providers/migration.py)."""
        if suffix != ".seed":
            return None
        header, _, body = data.rstrip(b"\0").decode().partition("\n")
        return _padded(f"{header}\n{retarget_tmpfiles(body, spec)}".encode())

    def console_log(self, object_name: str):
        return None  # the console is on the Xen host: `env console` attaches to it
