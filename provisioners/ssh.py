"""The SSH transport: paramiko, with the machine's host key known in advance.

vbox generates each machine's host key before its first boot, so every connection,
the first included, checks it: no AutoAddPolicy, no disabled checking.
"""

from __future__ import annotations

import base64
import logging
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vbox_cli.errors import VboxError


@dataclass(frozen=True)
class Target:
    name: str  # the machine's name, for messages
    host: str
    port: int
    user: str
    client_key: Path | None  # None: the user's own keys and agent (a host vbox did not make)
    host_key: str  # "ssh-ed25519 AAAA... [comment]"; "": known_hosts (below, else the user's)
    via: "Target | None" = None  # a host to go through (the guests of a remote libvirt host)
    known_hosts: Path | None = None  # with host_key "": this known_hosts file, not the user's


class SshTimeout(VboxError):
    pass


# paramiko imports `invoke` where it is installed (a dependency of its own package), only
# for ssh_config's `Match exec`, and vbox hands paramiko no ssh_config: 0.17 s of every
# command that opens an SSH connection here
sys.modules.setdefault("invoke", None)

# paramiko logs failed attempts (with tracebacks) from its own threads; vbox retries and
# reports what matters itself
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def _host_key_entry(target: Target):
    import paramiko

    kind, blob = target.host_key.split()[:2]
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    return name, kind, key


# A machine that ends while vbox waits on its connection (libvirtd ending a domain, a
# container killed) sends no FIN: the kernel gives up on the peer after KEEPALIVE idle
# seconds and PROBES unanswered probes, or after USER_TIMEOUT seconds of data not
# acknowledged, instead of paramiko waiting for ever. A live machine's kernel answers
# probes whatever its programs do.
KEEPALIVE, PROBES, USER_TIMEOUT = 15, 6, 60


def _socket(target: Target, timeout: float) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=timeout)  # OSError: the caller retries
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", PROBES),
                          ("TCP_USER_TIMEOUT", USER_TIMEOUT * 1000)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock


def connect(target: Target, timeout: float = 10):
    import paramiko

    client = paramiko.SSHClient()
    if target.host_key:
        name, kind, key = _host_key_entry(target)
        client.get_host_keys().add(name, kind, key)
    elif target.known_hosts is not None:
        try:
            client.get_host_keys().load(str(target.known_hosts))
        except OSError as exc:
            raise VboxError(f"{target.name}: cannot read the known_hosts file {target.known_hosts}: "
                            f"{exc.strerror}") from None
    else:
        client.load_system_host_keys()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = jump = None
    if target.via is None:
        sock = _socket(target, timeout)
    else:
        jump = connect(target.via, timeout)
        try:
            sock = jump.get_transport().open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0),
                                                     timeout=timeout)
        except (paramiko.SSHException, OSError):
            jump.close()
            raise
    try:
        client.connect(
            target.host, target.port, username=target.user or None,
            key_filename=str(target.client_key) if target.client_key else None,
            look_for_keys=target.client_key is None, allow_agent=target.client_key is None,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, sock=sock,
        )
    except BaseException:
        if jump is not None:
            jump.close()
        elif sock is not None:
            sock.close()
        raise
    if jump is not None:  # the host lives as long as the client: closed with it
        _close = client.close

        def close() -> None:
            _close()
            jump.close()

        client.close = close
    return client


STOPPED_EVERY = 2.0  # seconds between two looks at whether the machine still runs


def wait_for_ssh(target: Target, timeout: float, console_log: Path | None = None,
                 stopped: Callable[[], str | None] | None = None) -> "Connection":
    """Connect as soon as sshd answers; on time-out, show the console's tail. `stopped`
    says why the machine no longer runs (None while it does): looked at every few seconds,
    so that a machine that ended while vbox waited fails at once, not after the time-out."""
    import paramiko

    deadline = time.monotonic() + timeout
    last_error = "no answer"
    looked = time.monotonic()
    while True:
        remaining = deadline - time.monotonic()
        if stopped is not None and time.monotonic() - looked >= STOPPED_EVERY:
            looked = time.monotonic()
            reason = stopped()
            if reason:
                tail = _tail(console_log)
                raise VboxError(f"{target.name}: it stopped while vbox waited for its SSH ({reason})",
                                hint="`env up` starts it again" + (f"; its console log: {console_log}" if tail else ""),
                                details=f"last lines of the console ({console_log}):\n{tail}" if tail else None)
        if remaining <= 0:
            tail = _tail(console_log)
            raise SshTimeout(
                f"{target.name}: SSH did not answer within {timeout:g} s ({last_error})",
                hint="raise boot_timeout in the Envfile if the machine is just slow"
                     + (f"; its console log: {console_log}" if tail else ""),
                details=f"last lines of the console ({console_log}):\n{tail}" if tail else None,
            )
        if target.via is None:  # behind a host, the host tries the port
            try:
                with socket.create_connection((target.host, target.port), timeout=min(1.0, remaining)):
                    pass
            except OSError as exc:
                last_error = exc.strerror or str(exc)
                time.sleep(0.05)
                continue
        try:
            # short: behind a user-mode port forward the TCP connection is accepted
            # before the guest's sshd is there to send its banner
            return Connection(connect(target, timeout=min(5.0, max(remaining, 1.0))), target.name, stopped)
        except paramiko.BadHostKeyException:
            raise VboxError(
                f"{target.name}: the machine's SSH host key is not the one vbox made for it",
                hint="someone may be impersonating it; `env destroy` and `env up` make a new machine",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # sshd is starting, or the user's key is not in place yet
            last_error = str(exc) or type(exc).__name__
            time.sleep(0.1 if target.via is None else 1.0)


def _tail(path: Path | None, lines: int = 20) -> str:
    if not path or not path.exists():
        return ""
    text = path.read_text(errors="replace").replace("\r", "")
    return "\n".join(text.strip().splitlines()[-lines:])


CHANNEL_TIMEOUT = 60.0  # seconds for a machine's sshd to open a session on a live connection


class Connection:
    """One SSH connection to a machine, as the provisioning steps use it."""

    def __init__(self, client, name: str = "the machine", stopped: Callable[[], str | None] | None = None):
        self.client = client  # paramiko.SSHClient
        self.name = name
        self.stopped = stopped  # why the machine no longer runs (None while it does): said when the connection is lost

    def _session(self):
        """A new channel on the connection, or a clear error: paramiko would wait an hour for
        a machine whose sshd does not answer (a container left frozen, an overloaded guest)."""
        import paramiko

        transport = self.client.get_transport()
        if transport is None or not transport.is_active():  # paramiko: "SSH session not active"
            raise VboxError(f"{self.name}: its SSH connection was closed (by its sshd, or on the way) before "
                            "the next command", hint="`env status`; `env up` again goes on where this stopped")
        try:
            return transport.open_session(timeout=CHANNEL_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise VboxError(f"{self.name}: its sshd did not open a session within {CHANNEL_TIMEOUT:g} s "
                            f"({str(exc) or type(exc).__name__})",
                            hint="`env status`; `env halt` and `env up` start it afresh") from None

    def run(self, command: str, on_line: Callable[[str], None]) -> int:
        """Run a command; each line of its output (stdout and stderr merged) goes to on_line.
        A connection lost on the way (the machine ended: its TCP keepalive, connect()) is an
        error, not the command's failure."""
        import paramiko

        channel = self._session()
        pending = b""
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            channel.shutdown_write()
            while data := channel.recv(32768):
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip("\r"))
            if pending:
                on_line(pending.decode(errors="replace").rstrip("\r"))
            status = channel.recv_exit_status()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(str(exc) or type(exc).__name__) from None
        transport = self.client.get_transport()
        if status == -1 and (transport is None or not transport.is_active()):  # closed with no status
            raise self._lost("the connection closed before the command's exit status")
        return status

    def _lost(self, what: str) -> VboxError:
        reason = self.stopped() if self.stopped is not None else None
        if reason:
            return VboxError(f"{self.name}: it stopped while a command ran over SSH ({reason})",
                             hint="`env up` starts it again and goes on where this stopped")
        return VboxError(f"{self.name}: its SSH connection was lost while a command ran ({what})",
                         hint="the machine may have stopped: `env status`; `env up` again goes on where this stopped")

    def upload(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        import paramiko

        channel = self._session()
        channel.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(channel)
        try:
            with sftp.open(remote_path, "wb") as f:
                f.write(data)
            sftp.chmod(remote_path, mode)
        finally:
            sftp.close()

    def close(self) -> None:
        self.client.close()
