"""What the providers need on the host, checked for `env doctor`, and how to fix it.

Each check says what it found and, when something is missing, which Debian packages
and which daemons fix it; `providers.daemons.fix()` installs and starts them.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LXCFS_MOUNT = "/var/lib/lxcfs"
MIN_FREE_GIB = 10


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" (works, with a caveat) or "missing"
    detail: str
    packages: tuple[str, ...] = ()
    daemons: tuple[str, ...] = ()
    hint: str | None = None
    repair: Callable[[], None] | None = field(default=None, repr=False)  # a fix that is neither apt nor a daemon

    @property
    def ok(self) -> bool:
        return self.status != "missing"


@dataclass
class HostReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def systemd_is_init() -> bool:
    return os.path.isdir("/run/systemd/system")


def _version(argv: list[str]) -> str:
    from vbox_cli import proc
    from vbox_cli.errors import VboxError

    try:
        out = proc.run(argv, check=False, timeout=10).stdout
    except VboxError:
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def which(program: str) -> str | None:
    """A program on PATH, or in the system's sbin folders (not on a normal user's PATH)."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _tool(name: str, program: str, package: str, version_args: tuple[str, ...] = ("--version",)) -> Check:
    path = which(program)
    if not path:
        return Check(name, "missing", f"{program} not found", packages=(package,))
    return Check(name, "ok", _version([path, *version_args]) or path)


def _socket_answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
        return True
    except OSError:
        return False


def check_libvirt() -> Check:
    from providers.hosts import SYSTEM_URI, open_libvirt
    from vbox_cli.errors import VboxError

    packages = ("libvirt-daemon-system", "libvirt-clients")
    try:
        import libvirt  # noqa: F401 - the binding itself is the question
    except ImportError:
        return Check("libvirt", "missing", "libvirt-python is not installed", hint="reinstall vbox-cli")
    if not shutil.which("libvirtd"):
        return Check("libvirt", "missing", "libvirtd not installed", packages=packages, daemons=("libvirtd",))
    try:
        conn = open_libvirt(SYSTEM_URI)
    except VboxError as exc:
        return Check("libvirt", "missing", exc.message, daemons=("virtlogd", "libvirtd"))
    try:
        caps = conn.getCapabilities()
        version = conn.getLibVersion()
    finally:
        conn.close()
    if "<domain type='qemu'" not in caps:
        return Check("libvirt", "missing", "libvirtd answers but has no QEMU driver",
                     packages=("libvirt-daemon-driver-qemu", "qemu-system-x86"))
    v = f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"
    return Check("libvirt", "ok", f"libvirtd {v} at {SYSTEM_URI}, QEMU driver")


def check_virtlogd() -> Check:
    if _socket_answers("/run/libvirt/virtlogd-sock"):
        return Check("virtlogd", "ok", "running")
    packages = () if shutil.which("virtlogd") else ("libvirt-daemon-system",)
    return Check("virtlogd", "missing", "not running (libvirt needs it for QEMU guests)",
                 packages=packages, daemons=("virtlogd",))


def check_kvm_device() -> Check:
    """/dev/kvm as Debian's udev rule leaves it (root:kvm 0660). Without udev (as on this
    build machine) it stays root-only; libvirt then finds KVM when it probes QEMU as root
    but not for the QEMU user, drops its capability cache and probes again on every
    domain definition: about 50 s each."""
    import grp

    path = "/dev/kvm"
    if not os.path.exists(path):
        return Check("/dev/kvm", "ok", "absent (TCG will be used)")
    st = os.stat(path)
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return Check("/dev/kvm", "warn", "no kvm group on this host")
    if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
        return Check("/dev/kvm", "ok", "root:kvm, group read-write")

    def repair() -> None:
        os.chown(path, 0, kvm_gid)
        os.chmod(path, 0o660)

    return Check("/dev/kvm", "missing", f"mode {oct(st.st_mode & 0o777)}, not usable by the kvm group (libvirt's "
                 "QEMU user): libvirt would re-probe QEMU on every domain definition",
                 hint="set root:kvm 0660, as udev does", repair=repair)


def check_accel(cache_dir: Path | None, kernel: Path | None) -> Check:
    from providers.accel import detect

    if not shutil.which("qemu-system-x86_64"):
        return Check("kvm", "missing", "QEMU is not installed", packages=("qemu-system-x86",))
    result = detect(cache_dir, kernel)
    if result.accel == "kvm" and kernel is None:
        return Check("kvm", "warn", f"KVM may work: {result.reason}", hint="`env box build debian-12`, then again")
    if result.accel == "kvm":
        return Check("kvm", "ok", f"KVM works: {result.reason}")
    return Check("kvm", "warn", f"TCG (software emulation) will be used: {result.reason}")


def check_lxcfs(mount: str = LXCFS_MOUNT) -> Check:
    """lxcfs mounted at /var/lib/lxcfs and answering. A mount can outlive its daemon (the
    process ended, the FUSE mount stayed): every access then fails with ENOTCONN and LXC's
    mount hook silently skips it, so machines would see the host's memory."""
    if not shutil.which("lxcfs"):
        return Check("lxcfs", "missing", "lxcfs not installed", packages=("lxcfs",), daemons=("lxcfs",))
    if not lxcfs_mounted(mount):
        return Check("lxcfs", "missing", f"not running (nothing mounted at {mount})", daemons=("lxcfs",))
    try:
        os.stat(f"{mount}/proc/meminfo")
    except OSError as exc:
        def repair() -> None:
            from vbox_cli import proc

            # Lazy: containers started while it was alive may still hold bind mounts of it.
            proc.run(["umount", "-l", mount])

        return Check("lxcfs", "missing", f"the mount at {mount} no longer answers ({exc.strerror}): "
                     "its lxcfs has ended", hint="unmount it and start lxcfs again",
                     repair=repair, daemons=("lxcfs",))
    return Check("lxcfs", "ok", f"mounted at {mount}")


def check_cgroup_view(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> Check:
    """lxcfs finds a container's limits by the cgroup of the process reading /proc/meminfo,
    in the hierarchy mounted at /sys/fs/cgroup. Where that mount does not match this
    system's cgroup namespace (the host's whole hierarchy bind-mounted into a nested
    container), lxcfs cannot find them and machines see the host's memory and CPUs."""
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        return Check("cgroup view", "ok", "unknown (no /proc/self/cgroup)")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") or (controllers == "" and not os.path.isdir(f"{root}/memory")):
            folder = f"{root}/memory{path}" if controllers else f"{root}{path}"
            try:
                procs = Path(folder, "cgroup.procs").read_text().split()
            except OSError:
                procs = []
            if str(os.getpid()) in procs:
                return Check("cgroup view", "ok", "the cgroup mount matches this system's cgroup namespace")
            return Check("cgroup view", "warn", f"this process is not in {folder} although /proc/self/cgroup names "
                         f"{path!r}: the cgroup hierarchy mounted at {root} is not this system's own (a nested "
                         "container?); lxcfs cannot find the machines' limits, so they see the host's memory "
                         "and CPUs", hint="mount a cgroup hierarchy of this system's own cgroup namespace")
    return Check("cgroup view", "ok", "no memory controller in /proc/self/cgroup")


def lxcfs_mounted(mount: str = LXCFS_MOUNT) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        return False
    return any(line.split()[1] == mount and "lxcfs" in line.split()[2] for line in mounts.splitlines())


def check_disk(store: Path) -> Check:
    probe = store
    while not probe.exists():
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gib = usage.free / 1024**3
    detail = f"{free_gib:.0f} GiB free for {store}"
    if free_gib < MIN_FREE_GIB:
        return Check("disk space", "warn", detail, hint=f"a box takes about 1.5 GiB; keep {MIN_FREE_GIB} GiB free")
    return Check("disk space", "ok", detail)


def check_virtiofsd() -> Check:
    """QEMU's virtiofsd, which serves KVM machines' synced folders (providers/virtiofs.py)."""
    from providers.virtiofs import VIRTIOFSD, missing

    if missing():
        return Check("virtiofsd", "missing", f"{VIRTIOFSD} not found (KVM machines' synced folders)",
                     packages=("qemu-system-common",))
    return Check("virtiofsd", "ok", _version([str(VIRTIOFSD), "--version"]) or str(VIRTIOFSD))


OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def check_ansible(needed: bool) -> Check:
    """ansible-playbook, for ansible steps: wanted when an Envfile here has one (Debian's
    ansible-core), found beside vbox's Python (the [ansible] extra) or on PATH."""
    from provisioners.ansible import playbook_command

    command = playbook_command()
    if command and not os.path.isdir("/dev/shm"):
        # Ansible's multiprocessing needs it ("Unable to use multiprocessing ... /dev/shm"); a
        # host that is a bare container may not have it
        return Check("ansible", "missing", f"{command}, but /dev/shm is missing (Ansible's multiprocessing "
                     "needs it)", hint="mount a tmpfs at /dev/shm", repair=_mount_shm)
    if command:
        return Check("ansible", "ok", command)
    if needed:
        return Check("ansible", "missing", "ansible-playbook not found; the Envfile here has ansible steps",
                     packages=("ansible-core",))
    return Check("ansible", "ok", "not installed (needed only by ansible steps)")


def _mount_shm() -> None:
    from vbox_cli import proc

    os.makedirs("/dev/shm", mode=0o1777, exist_ok=True)
    proc.run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm"])


def check_openvswitch(needed: bool) -> Check:
    """Open vSwitch, for `networks = [{ ovs = ... }]`: installed when an Envfile here needs
    it; running wherever it is installed."""
    from providers.ovs import unavailable

    if not shutil.which("ovs-vsctl"):
        if needed:
            return Check("openvswitch", "missing", "not installed; the Envfile here joins an Open vSwitch bridge",
                         packages=("openvswitch-switch",), daemons=("openvswitch",))
        return Check("openvswitch", "ok", "not installed (needed only by networks = [{ ovs = ... }])")
    if why := unavailable():
        return Check("openvswitch", "missing", why.split(" (")[0].split(":")[0], daemons=("openvswitch",))
    datapath = "kernel datapath" if os.path.isdir("/sys/module/openvswitch") else \
        "userspace datapath (no openvswitch kernel module)"
    return Check("openvswitch", "ok", f"ovsdb-server and ovs-vswitchd answer; {datapath}")


def run_checks(store: Path, cache_dir: Path | None, kernel: Path | None, needs_ovs: bool = False,
               needs_ansible: bool = False, user: str | None = None) -> HostReport:
    """Root's checks (and, with `user`, what that user needs); a normal user's own."""
    from providers import users

    if os.geteuid() != 0:
        return HostReport(users.checks_of_a_user(store, cache_dir, kernel, needs_ansible))
    checks = [
        _tool("debootstrap", "debootstrap", "debootstrap"),
        _tool("e2fsprogs", "mke2fs", "e2fsprogs", ("-V",)),
        _tool("qemu-img", "qemu-img", "qemu-utils"),
        _tool("qemu", "qemu-system-x86_64", "qemu-system-x86"),
        check_virtiofsd(),
        check_virtlogd(),
        check_libvirt(),
        check_kvm_device(),
        check_accel(cache_dir, kernel),
        _tool("dnsmasq", "dnsmasq", "dnsmasq-base", ("--version",)),
        _tool("iptables", "iptables", "iptables", ("--version",)),
        _tool("lxc", "lxc-start", "lxc"),
        _tool("rsync", "rsync", "rsync"),  # an LXC machine moved back (env migrate)
        _tool("fuse2fs", "fuse2fs", "fuse2fs", ()),  # ... read from its image without the kernel
        check_lxcfs(),
        check_cgroup_view(),
        users.check_subids_of(users.user_name()),
        check_openvswitch(needs_ovs),
        check_ansible(needs_ansible),
        _tool("ssh client", "ssh", "openssh-client", ("-V",)),
        check_disk(store),
    ]
    # `ssh -V` and `mke2fs -V` print to stderr; an empty version is fine, the path is shown.
    return HostReport(checks + (users.for_user(user) if user else []))
