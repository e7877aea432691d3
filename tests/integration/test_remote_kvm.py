"""KVM machines on another libvirt host, named with `host`: the box goes up through
libvirt's storage API, KVM is tried on that host, the project network is made there and
SSH to the machine goes through the host.

The other host is this host's libvirtd reached as a remote one: over SSH, through an
sshd this test starts on a loopback port with keys of its own (a host that is not a
machine of the Envfile: the URI's keyfile and known_hosts are used, by libvirt and by
vbox's SSH alike). Every byte of the box and every libvirt call crosses that SSH link.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from providers.leaks import find as find_leaks
from tests.integration.test_lxc import Project

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]  # its "other host" is this one: it checks every volume

SSHD = "/usr/sbin/sshd"

ENVFILE = """\
[machines.web]
provider = "kvm"
host = "{uri}"
memory = "512M"
boot_timeout = 600
provision = [{{ shell = "echo remote-$(hostname) | sudo tee /root/mark" }}]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """An sshd of this test on 127.0.0.1 (root by key only), ended by its PID."""
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} is missing: run `bash scripts/test.sh` (it installs openssh-server)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "host_key"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "client_key"], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    host_key = (folder / "host_key.pub").read_text().split()[:2]
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    (folder / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
PidFile {folder}/sshd.pid
LogLevel VERBOSE
""")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = open(folder / "sshd.log", "w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, (folder / "sshd.log").read_text()
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
    # the key and known_hosts a `host` URI names are files of the project (keys/, copied
    # there by the test); libvirt gets their absolute paths
    uri = f"qemu+libssh2://root@127.0.0.1:{port}/system?keyfile=keys/client_key&known_hosts=keys/known_hosts&sshauth=privkey"
    yield {"uri": uri, "log": folder / "sshd.log", "folder": folder}
    process.terminate()
    process.wait(timeout=30)
    log.close()


def _domain_xml(name: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True,
                          check=True).stdout


def _volumes() -> list[str]:
    result = subprocess.run(["virsh", "-c", "qemu:///system", "vol-list", "vbox"], capture_output=True, text=True)
    return result.stdout.split()


def test_a_kvm_machine_on_another_libvirt_host(debian12, sshd, tmp_path):
    project = Project(tmp_path / "remote")
    (project.folder / "keys").mkdir(parents=True)
    for name in ("client_key", "known_hosts"):
        shutil.copy(sshd["folder"] / name, project.folder / "keys" / name)
    project.write(ENVFILE.format(uri=sshd["uri"]))
    obj = f"vbox-{project.id}-web"
    try:
        result = project.env("up", timeout=1800)
        out = result.stdout + result.stderr
        # KVM was tried on that host (through its libvirt), and the note names the host
        assert "web: using" in out and "qemu+libssh2://root@127.0.0.1" in out, out
        # everything went through the host's sshd: libvirt, and the SSH to the machine
        accepted = sshd["log"].read_text().count("Accepted publickey for root")
        assert accepted >= 2, sshd["log"].read_text()
        assert project.ssh("web", "sudo cat /root/mark") == "remote-web\n"
        assert project.ssh("web", "hostname") == "web\n"
        status = project.status()
        assert status["web"]["state"] == "running" and status["web"]["provider"] == "kvm"
        # the box's disk was sent up through the storage API: a file of its own, not the
        # hard link to the box a local machine gets
        xml = ET.fromstring(_domain_xml(obj))
        assert xml.find("devices/serial/log") is None  # the console log is not a path of this host
        base = next(v for v in _volumes() if v.startswith("box-debian-12-") and v.endswith(".qcow2"))
        pool = Path("/var/lib/vbox/images")
        assert os.stat(pool / base).st_ino != os.stat(debian12.artefact("disk")).st_ino
        # the project network is made on that host, through its libvirt
        networks = subprocess.run(["virsh", "-c", "qemu:///system", "net-list", "--name"], capture_output=True,
                                  text=True).stdout.split()
        assert f"vbox-{project.id}" in networks
        # OpenSSH goes through the host too, with the URI's key and known_hosts
        config = project.env("ssh-config", "web").stdout
        assert "ProxyCommand ssh" in config and str(project.folder / "keys" / "client_key") in config
        # halt, then up: the same machine, provisioning not repeated
        project.env("halt", timeout=600)
        assert project.status()["web"]["state"] == "stopped"
        again = project.env("up", timeout=1800)
        assert "started" in again.stdout and "provisioned" not in again.stdout
        assert project.ssh("web", "sudo cat /root/mark") == "remote-web\n"
        # destroy: nothing of the machine, its box volumes or its network is left on that host
        project.env("destroy", "-f", timeout=600)
        listed = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                                text=True).stdout
        assert obj not in listed and "vbox-accel-probe-" not in listed
        assert not [v for v in _volumes() if project.id in v or v.startswith("box-debian-12-")], _volumes()
        networks = subprocess.run(["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"],
                                  capture_output=True, text=True).stdout.split()
        assert f"vbox-{project.id}" not in networks
    finally:
        project.env("destroy", "-f", check_rc=None, timeout=900)
    assert find_leaks(project.id) == []
    assert not (project.folder / ".vbox").exists()


def test_a_kvm_host_that_does_not_answer(debian12, tmp_path):
    """`host` of a kvm machine that does not answer: one clear error naming it, nothing made."""
    project = Project(tmp_path / "nohost")
    project.folder.mkdir()
    project.write('[machines.web]\nprovider = "kvm"\nhost = "qemu+ssh://root@127.0.0.1:1/system"\n')
    result = project.env("up", check_rc=1, timeout=300)
    assert "qemu+ssh://root@127.0.0.1:1/system" in result.stderr and "does not answer" in result.stderr
    assert find_leaks(project.id) == []
    project.env("destroy", "-f", check_rc=None)
