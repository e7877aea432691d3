"""What a normal user needs to use vbox without root: checked by `env doctor` (run by the
user, for herself; or by root with `--user NAME`), prepared by `env doctor --fix --user
NAME` (root).

Her KVM machines go through the system libvirt, as root's do (the project network, names
between machines): Debian lets the members of the `libvirt` group in, through polkit
(libvirt-daemon-system's rule /usr/share/polkit-1/rules.d/60-libvirt.rules), the way
vagrant-libvirt users have it. polkit answers libvirtd over the D-Bus system bus: a host
without systemd (a container, like the build machines) has none running, so --fix starts
one (`dbus-daemon --system`, which starts polkitd when asked), and starts libvirtd again if
it ran without a bus (it keeps its first failure to reach one). Nothing of libvirtd's
configuration is changed. Not in the group, she gets her own qemu:///session: user-mode
networking, SSH through a port on 127.0.0.1.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from pathlib import Path

from providers.host import Check, _socket_answers, systemd_is_init

LIBVIRT_GROUP = "libvirt"
BUS_SOCKET = "/run/dbus/system_bus_socket"
POLKIT_RULE = "/usr/share/polkit-1/rules.d/60-libvirt.rules"


def user_name(uid: int | None = None) -> str:
    return pwd.getpwuid(os.geteuid() if uid is None else uid).pw_name


def in_group(user: str, group: str = LIBVIRT_GROUP) -> bool:
    """Whether the account is a member (its primary group, or listed) - as a new login sees
    it, not as this process's groups (a user just added logs in again)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    return user in entry.gr_mem or pwd.getpwnam(user).pw_gid == entry.gr_gid


def check_group(user: str) -> Check:
    name = f"{LIBVIRT_GROUP} group"
    if in_group(user):
        return Check(name, "ok", f"{user} is a member: KVM machines through the system libvirt, on the project "
                     "network")
    try:
        grp.getgrnam(LIBVIRT_GROUP)
    except KeyError:
        return Check(name, "missing", f"this host has no {LIBVIRT_GROUP} group", packages=("libvirt-daemon-system",))
    detail = f"{user} is not a member: KVM machines would run in the user's own qemu:///session (user-mode " \
             "networking, no project network)"
    if os.geteuid() != 0:
        return Check(name, "warn", detail, hint=f"as root: `env doctor --fix --user {user}`, then log in again")
    from vbox_cli import proc

    return Check(name, "missing", detail, hint=f"add {user} to the {LIBVIRT_GROUP} group",
                 repair=lambda: proc.run(["usermod", "--append", "--groups", LIBVIRT_GROUP, user]))


def check_system_bus() -> Check:
    """The D-Bus system bus, which libvirtd asks polkit through (systemd hosts have it)."""
    if _socket_answers(BUS_SOCKET):
        return Check("system bus", "ok", f"D-Bus answers at {BUS_SOCKET} (polkit lets the {LIBVIRT_GROUP} group "
                     "into libvirt)")
    if systemd_is_init():
        return Check("system bus", "missing", "D-Bus is not running", daemons=("dbus",))
    if not shutil.which("dbus-daemon"):
        return Check("system bus", "missing", "dbus-daemon is not installed", packages=("dbus", "polkitd"),
                     daemons=("dbus",))
    return Check("system bus", "missing", "no D-Bus system bus: libvirtd cannot ask polkit whether a user of the "
                 f"{LIBVIRT_GROUP} group may connect", daemons=("dbus",))


def _libvirt_as(user: str) -> str | None:
    """None when `user` can open qemu:///system; else libvirt's reason."""
    from providers.hosts import SYSTEM_URI
    from vbox_cli import proc

    if os.geteuid() != 0 or user == user_name():
        from providers.hosts import open_libvirt
        from vbox_cli.errors import VboxError

        try:
            open_libvirt(SYSTEM_URI).close()
            return None
        except VboxError as exc:
            return exc.message
    if not shutil.which("virsh"):
        return "virsh is not installed"
    result = proc.run(["runuser", "-u", user, "--", "virsh", "-c", SYSTEM_URI, "uri"], check=False, timeout=60)
    if result.returncode == 0:
        return None
    lines = [line.removeprefix("error: ") for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "virsh failed"


def check_libvirt_as(user: str) -> Check:
    name = "libvirt access"
    if not in_group(user):
        return Check(name, "warn", f"{user} is not in the {LIBVIRT_GROUP} group: qemu:///session only")
    why = _libvirt_as(user)
    if why is None:
        return Check(name, "ok", f"{user} reaches qemu:///system")
    if "system bus" in why and _socket_answers(BUS_SOCKET) and os.geteuid() == 0:
        # libvirtd started before the bus and keeps its failure to reach it
        from providers.daemons import restart_daemon

        return Check(name, "missing", f"{user} cannot reach qemu:///system: {why}",
                     hint="start libvirtd again, now that the system bus runs",
                     repair=lambda: restart_daemon("libvirtd"))
    return Check(name, "missing" if os.geteuid() == 0 else "warn", f"{user} cannot reach qemu:///system: {why}",
                 hint=f"as root: `env doctor --fix --user {user}`" + ("" if os.geteuid() == 0 else
                                                                     ", then log in again if it added you to a group"))


def check_subids_of(user: str) -> Check:
    from providers.subids import COUNT, SUBGID, SUBUID, allocate, of_user

    found = of_user(pwd.getpwnam(user).pw_uid)
    if found is not None:
        return Check("subids", "ok", f"{user}: uids {found.uid}-{found.uid + COUNT - 1}, "
                     f"gids {found.gid}-{found.gid + COUNT - 1} for unprivileged machines")
    detail = f"{user} has no range of {COUNT} ids in {SUBUID} and {SUBGID} (unprivileged LXC machines map " \
             "their ids into it)"
    return _lacking("subids", user, detail, f"give {user} {COUNT} ids above every range there",
                    lambda: allocate(user))


def _lacking(name: str, user: str, detail: str, fix: str, repair) -> Check:
    """What she lacks: root's doctor --fix gives it (`repair`); she is told to ask root."""
    if os.geteuid() != 0:
        return Check(name, "warn", detail, hint=f"as root: `env doctor --fix --user {user}`")
    return Check(name, "missing", detail, hint=fix, repair=repair)


def check_box_build(user: str) -> Check:
    """Her own box builds, in a user namespace of hers (boxes/userns.py)."""
    from boxes import userns

    why = userns.unavailable(pwd.getpwnam(user).pw_uid)
    if why is None:
        return Check("box build", "ok", f"{user} builds boxes into her own store, in a user namespace of hers "
                     "(debootstrap as its root)")
    detail = f"building a box without root needs a user namespace: {why}"
    if os.geteuid() != 0:
        return Check("box build", "warn", detail + "; root's boxes are yours to use",
                     hint=f"as root: `env doctor --fix --user {user}`")
    tools = bool(userns.missing_tools())  # else it lacks ids, which the subids check gives
    return Check("box build", "missing" if tools else "warn", detail, packages=("uidmap",) if tools else (),
                 hint="install uidmap" if tools else "the subids check gives them")


def check_bridges(user: str) -> Check:
    """The bridges lxc-usernet lets her LXC machines join (providers/lxc_user.py)."""
    from providers import lxc_user

    pool = lxc_user.bridges(user)
    missing = [bridge for bridge in pool if bridge not in lxc_user.allowed(user)]
    if not missing:
        return Check("lxc bridges", "ok", f"{user} may put LXC machines on {len(pool)} project bridges "
                     f"({pool[0]}..{pool[-1][-1]}) through lxc-user-nic")
    detail = f"{lxc_user.USERNET} lets {user} join {len(pool) - len(missing)} of the {len(pool)} project bridges " \
             "vbox gives a user: her LXC machines need them"
    return _lacking("lxc bridges", user, detail, f"add {user}'s lines to {lxc_user.USERNET}",
                    lambda: lxc_user.allow(user))


def check_cgroups(user: str) -> Check:
    """A cgroup of hers in each v1 hierarchy, for lxc-start to make her machines' under."""
    from providers import lxc_user

    if systemd_is_init() and not lxc_user.hierarchies():
        return Check("lxc cgroups", "warn", "a cgroup v2 host: systemd delegates a user's cgroup "
                     "(user@.service); vbox does not")
    missing = lxc_user.undelegated(user)
    if not missing:
        return Check("lxc cgroups", "ok", f"{user} has vbox-{user} in each cgroup hierarchy, for her LXC machines")
    detail = f"{user} has no cgroup of her own for LXC machines ({missing[0]}; gone after each host restart)"
    return _lacking("lxc cgroups", user, detail, f"make vbox-{user} in each hierarchy, hers",
                    lambda: lxc_user.delegate(user))


def for_user(user: str) -> list[Check]:
    """What `user` needs of this host, besides what root's checks cover."""
    checks = [check_group(user)]
    if os.path.exists(POLKIT_RULE) or os.geteuid() == 0:
        checks.append(check_system_bus())
    checks += [check_libvirt_as(user), check_subids_of(user), check_box_build(user), check_bridges(user),
               check_cgroups(user)]
    return [Check(f"{c.name} ({user})" if os.geteuid() == 0 else c.name, c.status, c.detail, c.packages, c.daemons,
                  c.hint, c.repair) for c in checks]


def checks_of_a_user(store: Path, cache_dir: Path | None, kernel: Path | None, needs_ansible: bool) -> list[Check]:
    """What a normal user can use of this host: the system libvirt (through the libvirt
    group), root's boxes; what needs root is said as such."""
    from providers.accel import known
    from providers.host import _tool, check_accel, check_ansible, check_disk, check_lxcfs
    from vbox_cli.paths import SYSTEM_HOME

    me = user_name()
    checks = [_tool("qemu-img", "qemu-img", "qemu-utils"), _tool("qemu", "qemu-system-x86_64", "qemu-system-x86"),
              *for_user(me)]
    if in_group(me):  # the system libvirt's QEMU runs the machines: root's finding, or one at the first up
        result = known(SYSTEM_HOME)
        checks.append(Check("kvm", "ok" if result and result.accel == "kvm" else "warn",
                            f"{'KVM' if result and result.accel == 'kvm' else 'TCG'}: {result.reason}" if result else
                            "found out through libvirt at the first KVM machine's up"))
    else:
        checks.append(check_accel(cache_dir, kernel))
    checks += [
        _tool("lxc", "lxc-start", "lxc"),
        check_lxcfs(),
        check_ansible(needs_ansible),
        _tool("ssh client", "ssh", "openssh-client", ("-V",)),
        check_disk(store),
    ]
    return checks
