"""Boxes vbox did not build, made by the tests as their publishers make them
(tests/integration/foreign_boxes.py: debootstrap, ifupdown and DHCP, the user vagrant with
Vagrant's insecure key, baked host keys, a bootloader in the disk): imported, and machines
from them up with every verb working, the insecure key gone, their own host key and name,
one stable address."""

from __future__ import annotations

import json
import uuid

import libvirt
import pytest

from boxes.store import BoxStore
from providers.leaks import find as find_leaks
from tests.integration import foreign_boxes
from tests.integration.conftest import vbox
from tests.integration.test_lxc import Project

pytestmark = [pytest.mark.integration, pytest.mark.slow(minutes=8)]


@pytest.fixture(scope="session")
def vagrant_boxes(host, tmp_path_factory):
    """{"lxc", "libvirt", "oci", "cloud"} -> path: the two .box files, the OCI image and the
    cloud image, made once."""
    folder = tmp_path_factory.mktemp("foreign")
    tree = foreign_boxes.debian_tree(folder / "tree")
    return {"lxc": foreign_boxes.vagrant_lxc_box(tree, folder / "lxc", folder / "bookworm-lxc.box"),
            "libvirt": foreign_boxes.vagrant_libvirt_box(tree, folder / "libvirt", folder / "bookworm-libvirt.box"),
            "oci": foreign_boxes.oci_image(tree, folder / "oci", folder / "bookworm-oci.tar"),
            "cloud": foreign_boxes.cloud_image(tree, folder / "cloud", folder / "bookworm-cloud.qcow2"),
            "virtualbox": foreign_boxes.vagrant_virtualbox_box(folder / "libvirt", folder / "virtualbox",
                                                               folder / "bookworm-virtualbox.box")}


@pytest.fixture
def imported(vagrant_boxes):
    """Import a box under a name of this test's own; removed afterwards."""
    names = []

    def run(kind: str) -> str:
        name = f"test/vagrant-{kind}-{uuid.uuid4().hex[:6]}"
        result = vbox("box", "import", str(vagrant_boxes[kind]), "--name", name, "--version", "1.0", check_rc=0)
        user = {"oci": "root", "cloud": "vbox"}.get(kind, "vagrant")
        assert f"imported box {name} 1.0" in result.stdout and f"user {user}" in result.stdout
        names.append(name)
        return name

    yield run
    for name in names:
        vbox("box", "remove", name, "--force", check_rc=None)
        assert BoxStore().find(name) is None


@pytest.fixture
def project(tmp_path):
    p = Project(tmp_path / "foreign")
    p.folder.mkdir()
    yield p
    if (p.folder / "Envfile").exists():
        p.env("destroy", "-f", check_rc=None)
    assert find_leaks(p.id) == []


def vm_envfile(name: str, box: str) -> str:
    """A KVM machine from `box`, with a step that must run once."""
    return (f'[machines.{name}]\nbox = "{box}"\nprovider = "kvm"\nmemory = "768M"\ndisk = "3G"\n'
            'provision = [{ shell = "echo provisioned >> /root/once.log" }]\n')


def check_machine(project: Project, name: str, user: str = "vagrant") -> None:
    """What a machine from a box vbox did not build must be once up: vbox's, not the
    publisher's."""
    status = {m["name"]: m for m in json.loads(project.env("status", "--json").stdout)["machines"]}[name]
    assert status["state"] == "running"
    # logged in as the box's user, with the project's key: Vagrant's insecure key is gone
    assert project.ssh(name, "id -un") == f"{user}\n"
    keys = project.ssh(name, "cat ~/.ssh/authorized_keys")
    assert "insecure" not in keys and keys.startswith("ssh-ed25519 ")
    # sshd offers the host key vbox made (the one in known_hosts), not the box's baked one
    known = (project.folder / ".vbox" / "known_hosts").read_text()
    served = project.ssh(name, "sudo cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert served in known
    # its own name, and one address: the one vbox gave it, which DHCP also gives it
    assert project.ssh(name, "hostname") == f"{name}\n"
    addresses = project.ssh(name, "ip -4 -o addr show eth0").split()
    assert [a for a in addresses if "/" in a and a[0].isdigit()] == [f"{status['address']}/24"]
    assert project.ssh(name, "sudo -n true 2>&1; echo $?").strip().endswith("0")


def test_a_vagrant_lxc_box(project, imported):
    box = imported("lxc")
    project.write(f"""
        [machines.vg]
        box = "{box}"
        provider = "lxc"
        provision = [{{ shell = "echo provisioned >> /root/once.log" }}]
    """)
    (project.folder / "files").mkdir()
    (project.folder / "files" / "hello.txt").write_text("hello\n")
    project.env("up")
    check_machine(project, "vg")
    assert project.ssh("vg", "cat /vbox/files/hello.txt") == "hello\n"  # synced folders: LXC needs nothing of the box
    project.env("halt")
    project.env("up")
    assert project.ssh("vg", "sudo cat /root/once.log") == "provisioned\n"
    project.env("reload")
    check_machine(project, "vg")
    project.env("destroy", "-f")


def test_an_oci_image_as_an_lxc_machine(project, imported):
    """Its two layers applied (the upper one's whiteout and file), logged in as root."""
    box = imported("oci")
    project.write(f"""
        [machines.img]
        box = "{box}"
        provider = "lxc"
        provision = [{{ shell = "echo provisioned >> /root/once.log" }}]
    """)
    project.env("up")
    check_machine(project, "img", user="root")
    assert project.ssh("img", "cat /etc/image-layer; test -e /etc/motd || echo no motd") == "2\nno motd\n"
    project.env("halt")
    project.env("up")
    assert project.ssh("img", "cat /root/once.log") == "provisioned\n"
    project.env("destroy", "-f")


def test_a_vagrant_libvirt_box_boots_from_its_own_bootloader(project, imported, debian12):
    box = imported("libvirt")
    project.write(vm_envfile("vk", box))
    up = project.env("up")
    assert "does not mount them (not a box vbox built" in up.stdout + up.stderr  # said, not silently skipped
    check_machine(project, "vk")
    # booted by its own bootloader: no kernel given to the domain
    conn = libvirt.open("qemu:///system")
    try:
        domain = conn.lookupByName(f"vbox-{project.id}-vk")
        assert "<kernel>" not in domain.XMLDesc(0) and "<boot dev='hd'/>" in domain.XMLDesc(0)
    finally:
        conn.close()
    # the command line its extlinux.conf gives (BOOT_IMAGE is the bootloader's word)
    assert project.ssh("vk", "cat /proc/cmdline").startswith("BOOT_IMAGE=/boot/vmlinuz-")
    # halt through ACPI (not a power-off), then up again: the same machine, not provisioned twice
    project.ssh("vk", "echo keep > ~/data")
    halt = project.env("halt")
    assert "powered off" not in halt.stdout + halt.stderr
    project.env("up")
    assert project.ssh("vk", "cat ~/data") == "keep\n"
    assert project.ssh("vk", "sudo cat /root/once.log") == "provisioned\n"
    check_machine(project, "vk")
    project.env("destroy", "-f")


def test_a_box_that_is_neither_is_refused(tmp_path):
    other = tmp_path / "hyperv.box"
    import io
    import tarfile

    with tarfile.open(other, "w:gz") as tar:
        data = json.dumps({"provider": "hyperv"}).encode()
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = vbox("box", "import", str(other), "--name", "vb", check_rc=1)
    assert "'hyperv' provider" in result.stderr and "nothing was written" in result.stderr
    (tmp_path / "junk").write_bytes(b"junk" * 100)
    result = vbox("box", "import", str(tmp_path / "junk"), check_rc=2)
    assert "not a box file vbox knows" in result.stderr


def test_a_self_hosted_vagrant_catalog_works_as_it_is(project, vagrant_boxes, tmp_path):
    """A catalog as Vagrant users host it (libvirt and lxc boxes, nothing of vbox's),
    served on 127.0.0.1: an LXC machine gets the newest version with an lxc box, `env box
    add` the newest with a libvirt box; a provider entry without a checksum is not taken."""
    import functools
    import hashlib
    import http.server
    import shutil
    import threading

    www = tmp_path / "www"
    www.mkdir()
    name = f"test/vagrant-cat-{uuid.uuid4().hex[:6]}"
    providers = {}
    for kind in ("lxc", "libvirt"):
        shutil.copy(vagrant_boxes[kind], www / f"{kind}.box")
        providers[kind] = {"name": kind, "url": f"{kind}.box", "checksum_type": "sha256",
                           "checksum": hashlib.sha256((www / f"{kind}.box").read_bytes()).hexdigest()}
    catalog = {"name": name, "description": "a Vagrant box", "versions": [
        {"version": "1.0.0", "providers": [providers["libvirt"], providers["lxc"]]},
        {"version": "1.1.0", "providers": [providers["libvirt"]]},
        {"version": "1.2.0", "providers": [{"name": "lxc", "url": "lxc.box"}]},  # no checksum: not taken
    ]}
    (www / "catalog.json").write_text(json.dumps(catalog))
    fetched = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            fetched.append(args[1] if len(args) > 1 else "")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        project.write(f"""
            [machines.vg]
            box = "{name}"
            box_url = "http://127.0.0.1:{httpd.server_address[1]}/catalog.json"
            provider = "lxc"
        """)
        up = project.env("up")
        assert f"added box {name} 1.0.0" in up.stdout + up.stderr
        assert any("lxc.box" in line for line in fetched) and not any("libvirt.box" in line for line in fetched)
        check_machine(project, "vg")
        box = BoxStore().find(name)
        assert box.meta.source["provider"] == "lxc" and box.artefacts == ["rootfs"]
        # for a VM: the newest version with a libvirt box (the libvirt box's machines are
        # tested above; `env box add` prefers vbox's, then libvirt's, then lxc's)
        project.env("destroy", "-f")
        added = vbox("box", "add", name, "--catalog", f"http://127.0.0.1:{httpd.server_address[1]}/catalog.json",
                     check_rc=0)
        assert "1.1.0" in added.stdout
        assert BoxStore().find(name, "1.1.0").meta.source["provider"] == "libvirt"
        assert BoxStore().find(name, "1.1.0").artefacts == ["disk"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        project.env("destroy", "-f", check_rc=None)
        vbox("box", "remove", name, "--force", check_rc=None)


def test_a_cloud_image_takes_its_identity_from_a_nocloud_seed(project, imported, debian12):
    """cloud-init makes the user vbox with the project's key, installs the host key vbox
    made (and no other), names the machine, and takes DHCP on the interface with its MAC;
    once: a later boot does not set it up again."""
    box = imported("cloud")
    project.write(vm_envfile("cl", box))
    project.env("up")
    check_machine(project, "cl", user="vbox")
    assert project.ssh("cl", "ls /etc/ssh | grep -c '^ssh_host_.*_key$'") == "1\n"  # ed25519, vbox's: no other
    assert "status: done" in project.ssh("cl", "cloud-init status")  # up waited for it
    first = project.ssh("cl", "sudo cat /var/lib/cloud/data/instance-id")
    project.env("halt")
    project.env("up")
    check_machine(project, "cl", user="vbox")
    assert project.ssh("cl", "sudo cat /var/lib/cloud/data/instance-id") == first
    assert project.ssh("cl", "sudo cat /root/once.log") == "provisioned\n"
    project.env("destroy", "-f")


def test_a_virtualbox_box_has_its_disk_converted(imported, vagrant_boxes):
    """The VMDK becomes a qcow2 with the same guest data as the libvirt box made from the
    same disk (whose machines boot, above), and the import says what it converted."""
    import subprocess

    box = BoxStore().find(imported("virtualbox"))
    assert "box-disk001.vmdk, streamOptimized) converted to qcow2" in box.meta.description
    libvirt_disk = vagrant_boxes["libvirt"].parent / "libvirt" / "box.img"
    subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", str(libvirt_disk),
                    str(box.artefact("disk"))], check=True)
