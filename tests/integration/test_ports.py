"""Forwarded ports with real machines (an LXC container and a KVM machine): TCP and UDP
reach servers started in the machines; a forward on 0.0.0.0 is reached from another
host (a network namespace of this test's own); forwards go at halt and come back at up,
and after their rules were lost (as at a host restart); a taken port is refused naming
who holds it; `auto` takes another; destroy leaves no rule."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

# A TCP echo (socket-activated cat) and a UDP echo (perl-base is in the box), as services
# that come back when the machine starts again, from files of the project.
FILES = {
    "udpecho.pl": """use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => 9053, Proto => "udp") or die "udpecho: $!";
while ($s->recv(my $m, 1024)) { $s->send("echo:$m") }
""",
    "udpecho.service": "[Service]\nExecStart=/usr/bin/perl /usr/local/lib/udpecho.pl\n\n"
                       "[Install]\nWantedBy=multi-user.target\n",
    "tcpecho.socket": "[Socket]\nListenStream=80\nAccept=yes\n\n[Install]\nWantedBy=sockets.target\n",
    "tcpecho@.service": "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n",
}
SERVERS = ('[{ file = "udpecho.pl", to = "/usr/local/lib/udpecho.pl" }, '
           + ", ".join(f'{{ file = "{name}", to = "/etc/systemd/system/{name}" }}' for name in FILES if name != "udpecho.pl")
           + ', { shell = "systemctl daemon-reload && systemctl enable --now tcpecho.socket udpecho.service" }]')
NETNS, HOST_IF, NS_IF = "vbxtest-ports", "vbxtp-h", "vbxtp-n"
HOST_ADDR, NS_ADDR = "10.250.77.1", "10.250.77.2"


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def tcp_echo(port: int, address: str = "127.0.0.1", netns: str | None = None) -> str:
    script = (f"exec 3<>/dev/tcp/{address}/{port} || exit 7; echo hello-{port} >&3; "
              "timeout 5 head -1 <&3")
    argv = ["bash", "-c", script]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return result.stdout.strip() if result.returncode == 0 else f"failed: {result.stderr.strip()}"


def udp_echo(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for _ in range(5):  # the server may still be starting
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                return s.recv(1024).decode()
            except OSError:
                continue
    return "no answer"


@pytest.fixture
def netns():
    """Another host: a network namespace with a veth to this host (removed afterwards)."""
    def run(*argv):
        subprocess.run(argv, check=True, capture_output=True)

    run("ip", "netns", "add", NETNS)
    try:
        run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        run("ip", "link", "set", NS_IF, "netns", NETNS)
        run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_IF)
        run("ip", "link", "set", HOST_IF, "up")
        run("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", NS_IF)
        run("ip", "netns", "exec", NETNS, "ip", "link", "set", NS_IF, "up")
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)


def rules_of(project_id: str) -> list[str]:
    from providers.ports import chains

    names = [chain for _, chain, _ in chains(project_id).values()]
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(name in line for name in names) or project_id in line]


def test_forwarded_ports(debian12, tmp_path, netns):
    tcp, udp, everywhere, vm_tcp, held = free_ports(5)
    project = Project(tmp_path / "ports")
    project.folder.mkdir()
    for name, text in FILES.items():
        (project.folder / name).write_text(text)
    project.write(f"""
[machines.web]
provision = {SERVERS}
ports = [
  {{ host = {tcp}, guest = 80 }},
  {{ host = {udp}, guest = 9053, protocol = "udp" }},
  {{ host = {everywhere}, guest = 80, address = "0.0.0.0" }},
]

[machines.vm]
provider = "kvm"
provision = {SERVERS}
ports = [{{ host = {vm_tcp}, guest = 80 }}]
""")
    other = Project(tmp_path / "other")
    other.folder.mkdir()
    listener = socket.socket()
    try:
        project.env("up", timeout=900)
        assert tcp_echo(tcp) == f"hello-{tcp}"
        assert udp_echo(udp) == "echo:ping"
        assert tcp_echo(vm_tcp) == f"hello-{vm_tcp}"  # a KVM machine's forward
        assert tcp_echo(everywhere, HOST_ADDR, netns) == f"hello-{everywhere}"  # from another host
        assert tcp_echo(tcp, HOST_ADDR, netns).startswith("failed"), "a 127.0.0.1 forward is this host's only"
        listed = json.loads(project.env("port", "--json").stdout)["ports"]
        assert {(p["machine"], p["host"], p["protocol"], p["active"]) for p in listed} == {
            ("web", tcp, "tcp", True), ("web", udp, "udp", True), ("web", everywhere, "tcp", True),
            ("vm", vm_tcp, "tcp", True)}
        # halt: gone (nothing listens there: refused); up: back
        project.env("halt", "web")
        assert tcp_echo(tcp).startswith("failed")
        assert {p["active"] for p in json.loads(project.env("port", "web", "--json").stdout)["ports"]} == {False}
        assert tcp_echo(vm_tcp) == f"hello-{vm_tcp}"  # the other machine's stays
        project.env("up", "web")
        assert tcp_echo(tcp) == f"hello-{tcp}" and udp_echo(udp) == "echo:ping"
        # the rules lost while the machines run (as at a host restart): up makes them again
        from providers.ports import remove_all

        remove_all(project.id)
        assert tcp_echo(tcp).startswith("failed")
        project.env("up")
        assert tcp_echo(tcp) == f"hello-{tcp}" and tcp_echo(vm_tcp) == f"hello-{vm_tcp}"
        # a port held by a program of this host, and one held by the first project: refused,
        # naming who holds it, before anything is made
        listener.bind(("127.0.0.1", held))
        listener.listen()
        other.write(f"[machines.a]\nports = [{{ host = {held}, guest = 80 }}]\n")
        refused = other.env("up", check_rc=1)
        me = Path("/proc/self/comm").read_text().strip()  # "python", or "pytest" when run as .venv/bin/pytest
        assert f"port {held}/tcp on 127.0.0.1 is taken by {me} (pid {os.getpid()})" in refused.stderr, refused.stderr
        other.write(f"[machines.a]\nports = [{{ host = {tcp}, guest = 80 }}]\n")
        refused = other.env("up", check_rc=1)
        assert f"is taken by vbox machine 'web' of project {project.id}" in refused.stderr, refused.stderr
        assert other.status()["a"]["state"] == "not created" and find_leaks(other.id) == []
        # auto: the next free port, said and recorded
        other.write(f"[machines.a]\nports = [{{ host = {held}, guest = 22, auto = true }}]\n")
        up = other.env("up")
        chosen = json.loads(other.env("port", "--json").stdout)["ports"][0]["host"]
        assert chosen != held and f"forwarding {chosen} instead" in up.stdout
        banner = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{chosen}; timeout 5 head -1 <&3"],
                                capture_output=True, text=True, timeout=30).stdout
        assert banner.startswith("SSH-2.0-OpenSSH")
    finally:
        listener.close()
        other.env("destroy", "-f", check_rc=None)
        project.env("destroy", "-f", check_rc=None, timeout=600)
    assert rules_of(project.id) == [] and rules_of(other.id) == []
    assert find_leaks(project.id) == [] and find_leaks(other.id) == []
