"""Which machines live on another libvirt host, and how OpenSSH reaches them there."""

from __future__ import annotations

import shlex

from providers.remote import machine_access
from tests.unit.test_xen import _Project
from provisioners.openssh import proxy_command as proxy_option


def test_kvm_machines_are_local_unless_they_name_a_host(tmp_path):
    project = _Project(tmp_path, {})
    machines = {
        "here": {"provider": "kvm"},
        "there": {"provider": "kvm", "host": "qemu+ssh://me@server/system"},
        "box": {"provider": "lxc"},
        "xen": {"provider": "xen"},
    }
    assert machine_access(project, machines, "here") is None  # the local default (qemu:///system or a session)
    there = machine_access(project, machines, "there")
    assert there.uri == "qemu+ssh://me@server/system" and there.remote and there.ssh_host == "server"
    assert machine_access(project, machines, "box") is None
    xen = machine_access(project, machines, "xen")
    assert xen.uri == "xen:///system" and not xen.remote


def test_the_proxy_uses_the_key_and_known_hosts_the_uri_names(tmp_path):
    project = _Project(tmp_path, {})
    named = machine_access(project, {"web": {
        "provider": "kvm",
        "host": "qemu+libssh2://root@server:2222/system?keyfile=k/id&known_hosts=k/kh&sshauth=privkey"}}, "web")
    argv = shlex.split(proxy_option(project, named))
    assert argv[:1] == ["ssh"] and argv[-4:] == ["-W", "%h:%p", "--", "server"]
    assert ["-i", f"{tmp_path}/k/id"] == argv[argv.index("-i"):argv.index("-i") + 2]
    assert f"UserKnownHostsFile={tmp_path}/k/kh" in argv and "StrictHostKeyChecking=yes" in argv
    assert ["-p", "2222"] == argv[argv.index("-p"):argv.index("-p") + 2] and ["-l", "root"] == argv[:3][1:]
    # without them: the user's own SSH setup, nothing added
    plain = machine_access(project, {"web": {"provider": "kvm", "host": "qemu+ssh://server/system"}}, "web")
    assert shlex.split(proxy_option(project, plain)) == ["ssh", "-p", "22", "-W", "%h:%p", "--", "server"]
