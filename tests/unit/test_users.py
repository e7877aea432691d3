"""A normal user of the system libvirt (providers/users.py, the KVM provider's group mode):
what doctor says of her, and what her KVM machines are not given. No root needed, no
libvirtd: the group database and the process's uid are this test's."""

from __future__ import annotations

import grp
import pwd
from types import SimpleNamespace

import pytest

from providers import users


@pytest.fixture
def alice(monkeypatch):
    """alice (uid 1500), in no group; libvirt's group exists with `members`."""
    members: list[str] = []
    monkeypatch.setattr(pwd, "getpwnam", lambda name: SimpleNamespace(pw_name=name, pw_uid=1500, pw_gid=1500))
    monkeypatch.setattr(grp, "getgrnam", lambda name: SimpleNamespace(gr_name=name, gr_gid=106, gr_mem=members)
                        if name == "libvirt" else (_ for _ in ()).throw(KeyError(name)))
    return members


def test_root_is_offered_to_add_her_to_the_group_and_she_is_told_to_ask_root(alice, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    check = users.check_group("alice")
    assert check.status == "missing" and check.repair is not None and "qemu:///session" in check.detail
    monkeypatch.setattr("os.geteuid", lambda: 1500)
    check = users.check_group("alice")
    assert check.status == "warn" and check.repair is None
    assert check.hint == "as root: `env doctor --fix --user alice`, then log in again"
    alice.append("alice")
    assert users.check_group("alice").status == "ok"
    assert users.in_group("alice")


def test_libvirt_access_says_why_and_restarts_a_libvirtd_that_never_saw_the_bus(alice, monkeypatch):
    alice.append("alice")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(users, "_libvirt_as", lambda user: "internal error: Unable to get system bus connection")
    monkeypatch.setattr(users, "_socket_answers", lambda path: True)
    check = users.check_libvirt_as("alice")
    assert check.status == "missing" and check.repair is not None and "start libvirtd again" in check.hint
    monkeypatch.setattr(users, "_socket_answers", lambda path: False)  # no bus yet: the bus check starts one
    assert users.check_libvirt_as("alice").repair is None
    monkeypatch.setattr(users, "_libvirt_as", lambda user: None)
    assert users.check_libvirt_as("alice").status == "ok"


def test_root_names_the_user_in_each_check(alice, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(users, "_libvirt_as", lambda user: None)
    monkeypatch.setattr(users, "_socket_answers", lambda path: True)
    monkeypatch.setattr("providers.subids.of_user", lambda uid: None)
    checks = {c.name: c for c in users.for_user("alice")}
    assert list(checks) == ["libvirt group (alice)", "system bus (alice)", "libvirt access (alice)", "subids (alice)",
                            "box build (alice)", "lxc bridges (alice)", "lxc cgroups (alice)"]
    # her box builds need the ids the subids check gives, and uidmap's newuidmap
    assert checks["box build (alice)"].status == "warn" and "subordinate ids" in checks["box build (alice)"].detail
    monkeypatch.setattr("providers.host.which", lambda tool: None if tool.startswith("new") else f"/usr/bin/{tool}")
    build = users.check_box_build("alice")
    assert build.status == "missing" and build.packages == ("uidmap",)


def test_a_group_member_gets_no_ports_folders_or_console_file_of_root(monkeypatch):
    """Her machines are on the system libvirt like root's, but NAT rules, virtiofsd's mounts
    and a console log written by root's virtlogd into her project are root's business."""
    from providers.base import Capability
    from providers.kvm import KvmProvider

    provider = KvmProvider.__new__(KvmProvider)
    provider.access, provider.uri = None, "qemu:///system"
    provider.host = SimpleNamespace(remote=False, shown="qemu:///system")
    monkeypatch.setattr("os.geteuid", lambda: 1500)
    assert provider.group_mode
    assert "only root may set" in provider.unsupported(Capability.PORTS)
    assert "must be root's here" in provider.unsupported(Capability.FOLDERS)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert not provider.group_mode
    provider.uri = "qemu:///session"
    monkeypatch.setattr("os.geteuid", lambda: 1500)
    assert not provider.group_mode  # her own session: another mode
