"""A machine whose sshd accepts the connection but opens no session (a container left
frozen, an overloaded guest): provisioning says so after CHANNEL_TIMEOUT, it does not
wait paramiko's hour. A real paramiko server on a socket pair."""

from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest

from provisioners import ssh
from vbox_cli.errors import VboxError


class Unanswering(paramiko.ServerInterface):
    def __init__(self):
        self.release = threading.Event()

    def get_allowed_auths(self, username):
        return "none"

    def check_auth_none(self, username):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        self.release.wait(10)  # as a frozen sshd: no answer
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def test_a_session_that_does_not_open_is_an_error_in_bounded_time(monkeypatch):
    monkeypatch.setattr(ssh, "CHANNEL_TIMEOUT", 0.5)
    near, far = socket.socketpair()
    server = paramiko.Transport(far)
    server.add_server_key(paramiko.RSAKey.generate(1024))
    interface = Unanswering()
    server.start_server(event=threading.Event(), server=interface)  # in its own thread
    client = paramiko.Transport(near)
    client.start_client(timeout=10)
    client.auth_none("vbox")
    holder = type("Client", (), {"get_transport": lambda self: client})()
    try:
        started = time.monotonic()
        with pytest.raises(VboxError) as info:
            ssh.Connection(holder, "web").run("true", lambda line: None)
        assert time.monotonic() - started < 5
        assert info.value.message.startswith("web: its sshd did not open a session within 0.5 s")
        with pytest.raises(VboxError, match="did not open a session"):
            ssh.Connection(holder, "web").upload(b"x", "/tmp/x")
    finally:
        interface.release.set()
        client.close()
        server.close()


def test_a_connection_closed_by_the_machine_is_said_so_not_a_slow_session():
    near, far = socket.socketpair()
    server = paramiko.Transport(far)
    server.add_server_key(paramiko.RSAKey.generate(1024))
    server.start_server(event=threading.Event(), server=Unanswering())
    client = paramiko.Transport(near)
    client.start_client(timeout=10)
    client.auth_none("vbox")
    holder = type("Client", (), {"get_transport": lambda self: client})()
    server.close()  # the machine's end goes
    deadline = time.monotonic() + 5
    while client.is_active() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with pytest.raises(VboxError) as info:
            ssh.Connection(holder, "web").run("true", lambda line: None)
        assert info.value.message.startswith("web: its SSH connection was closed"), info.value.message
    finally:
        client.close()


class Executing(Unanswering):
    """A session opens and a command is accepted; then the machine ends (no exit status)."""

    def __init__(self):
        super().__init__()
        self.executing = threading.Event()

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        self.executing.set()
        return True


def test_a_connection_lost_while_a_command_runs_is_an_error_not_the_command_s_failure():
    near, far = socket.socketpair()
    server = paramiko.Transport(far)
    server.add_server_key(paramiko.RSAKey.generate(1024))
    interface = Executing()
    server.start_server(event=threading.Event(), server=interface)
    client = paramiko.Transport(near)
    client.start_client(timeout=10)
    client.auth_none("vbox")
    holder = type("Client", (), {"get_transport": lambda self: client})()
    threading.Thread(target=lambda: interface.executing.wait(10) and (time.sleep(0.2), server.close())).start()
    try:
        with pytest.raises(VboxError) as info:
            ssh.Connection(holder, "web").run("sleep 100", lambda line: None)
        assert info.value.message.startswith("web: its SSH connection was lost while a command ran"), \
            info.value.message
        assert "`env up` again goes on" in info.value.hint
        # where the machine says why it stopped (libvirt's reason), that is what is said
        said = ssh.Connection(holder, "web", lambda: "libvirtd ended it")._lost("EOF")
        assert said.message == "web: it stopped while a command ran over SSH (libvirtd ended it)"
    finally:
        client.close()


def test_connections_to_a_machine_give_up_on_a_peer_that_went_silent():
    """The machine's end of the TCP connection gone without a word (its domain ended):
    the kernel's keepalive and user time-out end the connection, not paramiko's for ever."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        target = ssh.Target("vm", "127.0.0.1", listener.getsockname()[1], "vbox", None, "ssh-ed25519 AAAA")
        sock = ssh._socket(target, 5)
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == ssh.KEEPALIVE
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == ssh.PROBES
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == ssh.USER_TIMEOUT * 1000
        finally:
            sock.close()


def test_a_machine_that_stops_while_vbox_waits_for_its_ssh_fails_at_once(monkeypatch, tmp_path):
    """libvirtd restarted during a warm start ends the domain (reason "daemon"): the wait
    says so within seconds instead of waiting out boot_timeout."""
    with socket.socket() as unused:  # a port nobody listens on: sshd "not up yet"
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setattr(ssh, "STOPPED_EVERY", 0.1)
    console = tmp_path / "console.log"
    console.write_text("[  OK  ] Started ssh.service\n")
    looks = []

    def stopped():
        looks.append(time.monotonic())
        return "libvirtd ended it: libvirtd restarted while it was being started" if len(looks) >= 3 else None

    target = ssh.Target("vm", "127.0.0.1", port, "vbox", None, "ssh-ed25519 AAAA")
    began = time.monotonic()
    with pytest.raises(VboxError) as raised:
        ssh.wait_for_ssh(target, 600, console, stopped)
    assert time.monotonic() - began < 60 and len(looks) == 3
    assert raised.value.message == ("vm: it stopped while vbox waited for its SSH (libvirtd ended it: libvirtd "
                                    "restarted while it was being started)")
    assert "`env up` starts it again" in raised.value.hint and "Started ssh.service" in raised.value.details


def test_libvirt_says_why_a_domain_stopped():
    import libvirt

    from providers.libvirt_domain import LibvirtDomainProvider

    conn = libvirt.open("test:///default")
    provider = LibvirtDomainProvider.__new__(LibvirtDomainProvider)
    provider._domain = lambda name: next((d for d in conn.listAllDomains() if d.name() == name), None)
    dom = conn.lookupByName("test")
    assert provider.why_stopped("test") == ""  # running
    dom.destroy()
    assert provider.why_stopped("test") == "libvirt powered it off (virsh destroy?)"
    assert provider.why_stopped("gone") == "its libvirt domain is gone"
    dom.create()
    conn.close()
