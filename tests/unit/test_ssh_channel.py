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
