"""What vbox writes into every new machine before its first boot, whatever the provider:
its identity (the SSH host key vbox made for it, the project's authorized key, its
names). Each provider adds its own files and puts them in its own way."""

from __future__ import annotations

from providers.base import MachineSpec

# path in the machine -> (content, mode, owner)
Files = dict[str, tuple[str, int, str]]
# A box vbox built (feature STATIC_RESOLVER) does not start systemd-resolved when its kernel
# command line has this word; the machine resolves through /etc/resolv.conf, which names the
# project network's DNS (resolver_lines). resolved is ordered before sysinit.target, so
# every boot waited for it before sshd: 3.5 s of a KVM machine's boot under TCG here.
STATIC_RESOLVER = "static-resolver"
RESOLVER_WORD = "vbox.resolver=static"
RESOLV_CONF = "/run/vbox/resolv.conf"


def home(user: str) -> str:
    """The user's home in the machine (root's is /root: an OCI image's user)."""
    return "/root" if user == "root" else f"/home/{user}"


def identity_files(spec: MachineSpec) -> Files:
    hostname = spec.machine.hostname
    short = hostname.split(".")[0]
    return {
        # the static host name too: systemd-hostnamed (where installed) puts /etc/hostname back
        "/etc/hostname": (f"{short}\n", 0o644, "root"),
        "/etc/hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname} {short}\n"
                       "::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644, "root"),
        # the one host key vbox made and knows; no others for sshd to look for
        "/etc/ssh/sshd_config.d/vbox-host-key.conf": ("HostKey /etc/ssh/ssh_host_ed25519_key\n", 0o644, "root"),
        "/etc/ssh/ssh_host_ed25519_key": (spec.host_key_private, 0o600, "root"),
        "/etc/ssh/ssh_host_ed25519_key.pub": (spec.host_key_public + "\n", 0o644, "root"),
        f"{home(spec.user)}/.ssh/authorized_keys": (spec.authorized_key + "\n", 0o600, spec.user),
    }


def resolver_conf(gateway: str, domain: str) -> str:
    """/etc/resolv.conf of a machine that resolves through its project network's DNS."""
    return f"# written by vbox: the project network's DNS\nnameserver {gateway}\nsearch {domain}\n"


def static_resolver(spec: MachineSpec) -> bool:
    """Whether a VM resolves through resolver_conf instead of systemd-resolved: its box
    has the feature, and it is on a project network (whose DNS is its gateway)."""
    return STATIC_RESOLVER in spec.box.meta.features and bool(spec.network and spec.gateway)


def resolver_lines(spec: MachineSpec) -> list[str]:
    """tmpfiles lines of a VM's static resolver (static_resolver): /etc/resolv.conf links to
    a file in /run written at every boot, so a machine that moved to another network
    (a new credential or seed) resolves through that network's DNS from its next boot."""
    import base64

    encoded = base64.b64encode(resolver_conf(spec.gateway, spec.domain).encode()).decode()
    return ["d /run/vbox 0755 root root -", f"f+~ {RESOLV_CONF} 0644 root root - {encoded}",
            f"L+ /etc/resolv.conf - - - - {RESOLV_CONF}"]


def resolver_command(spec: MachineSpec) -> str:
    """The shell command (run as the box's user, through sudo) that gives a running VM with
    a static resolver its network's DNS: what a live move to another network needs, as
    the new credential gives it from its next boot."""
    import shlex

    return f"printf %s {shlex.quote(resolver_conf(spec.gateway, spec.domain))} | sudo -n tee {RESOLV_CONF} >/dev/null"


def retarget_tmpfiles(text: str, spec: MachineSpec) -> str:
    """A machine's tmpfiles lines (its credential's, its seed's) with the resolver of the
    network `spec` names instead of the one they had: for a move to another host's network.
    Its identity stays as it was written at its creation (vbox keeps no copy of its private
    host key to write it again)."""
    resolver = ("d /run/vbox ", f"f+~ {RESOLV_CONF} ", "L+ /etc/resolv.conf ")
    lines = [line for line in text.splitlines() if line and not line.startswith(resolver)]
    if static_resolver(spec):
        lines += resolver_lines(spec)
    return "\n".join(lines) + "\n"


def tmpfiles_lines(spec: MachineSpec) -> str:
    """The identity files as systemd tmpfiles.d lines, written at boot by the machine's own
    systemd (KVM: an SMBIOS credential; Xen: a seed disk)."""
    import base64

    lines = [f"d {home(spec.user)}/.ssh 0700 {spec.user} {spec.user} -"]
    for path, (content, mode, owner) in identity_files(spec).items():
        encoded = base64.b64encode(content.encode()).decode()
        lines.append(f"f+~ {path} {mode:04o} {owner} {owner} - {encoded}")
    if static_resolver(spec):
        lines += resolver_lines(spec)
    # the running name too: a box booted by its own bootloader (no systemd.hostname= on its
    # command line) has set its old one from /etc/hostname before these lines are applied
    lines.append(f"w /proc/sys/kernel/hostname - - - - {spec.machine.hostname.split('.')[0]}")
    return "\n".join(lines) + "\n"


def user_ids(box, user: str) -> tuple[int, int]:
    """(uid, gid) of a user of the box, from its root tree's /etc/passwd."""
    from boxes.tree import resolve
    from vbox_cli.errors import VboxError

    if user == "root":
        return 0, 0
    passwd = resolve(box.artefact("rootfs"), "etc/passwd")  # the tree's links stay in the tree
    for line in (passwd.read_text(errors="replace").splitlines() if passwd and passwd.is_file() else []):
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise VboxError(f"the box {box.name} has no user {user!r}")
