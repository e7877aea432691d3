"""Real box builds: debootstrap from the Debian mirror, a disk that boots, no half-built boxes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from boxes.build import _digest
from boxes.store import STAGING, BoxStore, mounts_under
from tests.integration.conftest import VBOX, vbox


def test_debian12_box_has_what_machines_need(debian12):
    root = debian12.artefact("rootfs")
    for path in ("usr/sbin/sshd", "usr/bin/sudo", "sbin/ip", "lib/systemd/systemd", "usr/lib/systemd/systemd-networkd"):
        assert (root / path).exists(), path
    assert "vbox:x:1000:1000::/home/vbox:/bin/bash" in (root / "etc/passwd").read_text()
    assert (root / "etc/sudoers.d/vbox").read_text() == "vbox ALL=(ALL) NOPASSWD:ALL\n"
    assert oct((root / "home/vbox/.ssh").stat().st_mode & 0o777) == "0o700"
    assert not list((root / "etc/ssh").glob("ssh_host_*")), "a box must not carry SSH host keys"
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service").is_symlink()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(debian12.artefact("disk"))],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert debian12.artefact("kernel").stat().st_size > 1_000_000
    assert debian12.artefact("initrd").stat().st_size > 1_000_000


def test_digest_matches_the_artefacts(debian12):
    assert debian12.digest == f"sha256:{_digest(debian12.path)}"


def test_box_list_shows_the_box(debian12):
    listed = json.loads(vbox("box", "list", "--json", check_rc=0).stdout)
    entry = next(b for b in listed if (b["name"], b["version"]) == ("debian-12", debian12.version))
    assert entry["digest"] == debian12.digest
    assert entry["artefacts"] == ["rootfs", "disk", "kernel", "initrd"]
    assert entry["size"] > 100 * 1024**2
    plain = vbox("box", "list", check_rc=0).stdout
    assert "debian-12" in plain and debian12.digest[:19] in plain


def test_second_build_of_an_unchanged_recipe_does_nothing(debian12):
    meta = debian12.path / "box.json"
    before = meta.stat().st_mtime_ns
    result = vbox("box", "build", "debian-12", check_rc=0)
    assert "is up to date" in result.stdout
    assert meta.stat().st_mtime_ns == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_banner(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            return conn.recv(64)
    except OSError:
        return b""


def test_the_disk_boots_to_sshd_under_tcg(debian12, tmp_path):
    """Direct kernel boot of a qcow2 overlay on the box's disk, as the KVM provider will
    do; sshd in the guest answers on a port forwarded from 127.0.0.1."""
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(debian12.artefact("disk")),
                    str(overlay)], check=True)
    console = tmp_path / "console.log"
    port = _free_port()
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-display", "none", "-nodefaults",
         "-no-user-config", "-serial", f"file:{console}", "-kernel", str(debian12.artefact("kernel")),
         "-initrd", str(debian12.artefact("initrd")), "-append", "root=LABEL=vbox-root console=ttyS0 rw",
         "-drive", f"file={overlay},if=virtio,format=qcow2",
         "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        banner = b""
        while time.monotonic() < deadline and qemu.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "login:" in text and (banner := _ssh_banner(port)).startswith(b"SSH-2.0-OpenSSH"):
                break
            time.sleep(2)
        text = console.read_text(errors="replace") if console.exists() else ""
        assert "login:" in text, f"no login prompt; console tail:\n{text[-3000:]}"
        assert banner.startswith(b"SSH-2.0-OpenSSH"), f"sshd did not answer: {banner!r}\n{text[-2000:]}"
    finally:
        qemu.kill()
        qemu.wait()


def _assert_store_clean(home: Path):
    store = BoxStore(home / "boxes")
    assert store.boxes() == []
    staging = home / "boxes" / STAGING
    assert not staging.exists() or list(staging.iterdir()) == []
    assert mounts_under(home) == []


def test_failed_debootstrap_says_why_and_leaves_nothing(host, tmp_path):
    home = tmp_path / "home"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('name = "broken"\nversion = "1"\nsuite = "bookworm"\n'
                      'mirror = "http://deb.debian.org/debian"\npackages = ["vbox-no-such-package"]\n')
    result = vbox("box", "build", str(recipe), env={"VBOX_HOME": str(home)}, check_rc=1)
    assert "error: debootstrap failed" in result.stderr
    assert "vbox-no-such-package" in result.stderr
    assert "hint: " in result.stderr
    _assert_store_clean(home)


def test_unknown_suite_fails_clearly(host, tmp_path):
    home = tmp_path / "home"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('name = "broken"\nversion = "1"\nsuite = "no-such-suite"\nmirror = "http://deb.debian.org/debian"\n')
    result = vbox("box", "build", str(recipe), env={"VBOX_HOME": str(home)}, check_rc=1)
    assert "error: debootstrap failed" in result.stderr and "no-such-suite" in result.stderr
    _assert_store_clean(home)


def _start_build(home: Path) -> tuple[subprocess.Popen, Path]:
    # SIGINT as a terminal gives it: a runner started in the background by a
    # non-interactive shell ignores SIGINT, and a program inherits that (Python then
    # installs no handler; the build ran on to rc 0 on such a runner)
    process = subprocess.Popen([str(VBOX), "--plain", "box", "build", "debian-12"],
                               env={**os.environ, "VBOX_HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # wait until debootstrap is well under way: it has unpacked part of the base system
    # (the build's staging folder is debian-12.PID.TOKEN)
    while not (found := list((home / "boxes" / STAGING).glob(f"debian-12.{process.pid}.*/rootfs/usr/bin"))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build did not start"
        time.sleep(0.2)
    return process, found[0].parent.parent.parent


def _children_in(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_build_leaves_nothing(host, tmp_path, signum):
    home = tmp_path / "home"
    process, staging = _start_build(home)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    _assert_store_clean(home)
    assert _children_in(staging) == []


def test_killed_build_is_swept_by_the_next(host, tmp_path):
    home = tmp_path / "home"
    process, staging = _start_build(home)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 60
    while _children_in(staging) and time.monotonic() < deadline:  # debootstrap got SIGTERM from the kernel
        time.sleep(0.5)
    assert _children_in(staging) == []
    assert staging.exists()  # SIGKILL left it behind ...
    broken = tmp_path / "recipe.toml"
    broken.write_text('name = "broken"\nversion = "1"\nsuite = "no-such-suite"\nmirror = "http://deb.debian.org/debian"\n')
    vbox("box", "build", str(broken), env={"VBOX_HOME": str(home)}, check_rc=1)
    assert not staging.exists()  # ... and the next build swept it away
    _assert_store_clean(home)


def test_export_and_import_give_the_same_box(debian12, tmp_path):
    """The real box through one archive and back, under another name: the same digest and
    root tree, and an LXC machine made from it comes up."""
    from boxes.tree import tree_digest
    from tests.integration.test_lxc import Project

    exported = vbox("box", "export", "debian-12", "-o", str(tmp_path / "d.box"), check_rc=0)
    assert "exported box debian-12" in exported.stdout
    sha = (tmp_path / "d.box.sha256").read_text().split()[0]
    assert sha in exported.stdout
    store = BoxStore()
    try:
        vbox("box", "import", str(tmp_path / "d.box"), "--name", "debian-12-imported", check_rc=0)
        copy = store.find("debian-12-imported")
        assert copy.digest == debian12.digest and copy.version == debian12.version
        assert tree_digest(copy.artefact("rootfs")) == tree_digest(debian12.artefact("rootfs"))
        again = vbox("box", "import", str(tmp_path / "d.box"), "--name", "debian-12-imported", check_rc=0)
        assert "imported box debian-12-imported" in again.stdout
        project = Project(tmp_path / "imported")
        project.folder.mkdir()
        project.write('[machines.web]\nbox = "debian-12-imported"\nfolders = []\n')
        try:
            project.env("up")
            assert project.ssh("web", "cat /etc/debian_version").startswith("12.")
        finally:
            project.env("destroy", "-f", check_rc=None)
    finally:
        vbox("box", "remove", "debian-12-imported", "--force")
    # a damaged copy: refused, nothing added
    data = (tmp_path / "d.box").read_bytes()
    (tmp_path / "cut.box").write_bytes(data[: len(data) * 2 // 3])
    refused = vbox("box", "import", str(tmp_path / "cut.box"), "--name", "debian-12-cut")
    assert refused.returncode == 1 and "nothing was written" in refused.stderr
    assert store.find("debian-12-cut") is None


def test_up_fetches_the_box_from_a_catalog_over_http(debian12, tmp_path):
    """A catalog folder written by `env box publish`, served on 127.0.0.1 by the test: an
    Envfile naming it brings its machines up from a box it did not have, fetched once."""
    import functools
    import http.server
    import threading

    from tests.integration.test_lxc import Project

    vbox("box", "export", "debian-12", "-o", str(tmp_path / "d.box"), check_rc=0)
    vbox("box", "publish", str(tmp_path / "d.box"), "--catalog", str(tmp_path / "www"), "--name", "team/deb12",
         check_rc=0)
    catalog = json.loads((tmp_path / "www/team/deb12.json").read_text())
    assert catalog["versions"][0]["providers"][0]["name"] == "vbox"
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(args[1] if len(args) > 1 else "")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Handler, directory=str(tmp_path / "www")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    project = Project(tmp_path / "fetching")
    project.folder.mkdir()
    project.write(f"""
[defaults]
box = "team/deb12"
box_url = "http://127.0.0.1:{httpd.server_address[1]}/team/deb12.json"
box_version = "~> {debian12.version.rsplit('.', 1)[0]}"
folders = []
[machines.a]
[machines.b]
""")
    store = BoxStore()
    try:
        said = project.env("up")
        assert "added box team/deb12" in said.stdout + said.stderr
        fetched = store.find("team/deb12")
        assert fetched.digest == debian12.digest and fetched.meta.source["sha256"]
        assert sum("vbox.box" in r for r in requests) == 1  # one download for both machines
        assert project.ssh("b", "cat /etc/debian_version").startswith("12.")
        assert "nothing to do" in project.env("up").stdout  # the store has it now: no request
        assert sum("vbox.box" in r for r in requests) == 1
    finally:
        project.env("destroy", "-f", check_rc=None)
        httpd.shutdown()
        httpd.server_close()
        vbox("box", "remove", "team/deb12", "--force")
    assert store.find("team/deb12") is None


@pytest.mark.slow
def test_builds_are_reproducible(debian12, tmp_path):
    """The same recipe built again, from a cold package cache, beside the store's box
    (built from the warm one): the same packages give the same digest, disk, kernel and
    initrd byte for byte (SOURCE_DATE_EPOCH, fixed UUID and hash seed, normalised times
    and files)."""
    from boxes.tree import tree_digest

    env = {"VBOX_HOME": str(tmp_path / "home"), "VBOX_CACHE": str(tmp_path / "cold-cache")}
    vbox("box", "build", "debian-12", env=env, timeout=1800, check_rc=0)
    again = BoxStore(tmp_path / "home" / "boxes").find("debian-12")
    assert again.meta.packages and any(p.startswith("openssh-server=") for p in again.meta.packages)
    if again.meta.packages != debian12.meta.packages:  # the mirror moved since the store's build
        assert again.digest != debian12.digest
        pytest.fail("the mirror has other packages than when the store's box was built: "
                    "`env box build debian-12 --force`, then run again")
    assert again.digest == debian12.digest
    for kind in ("disk", "kernel", "initrd"):
        assert again.artefact(kind).read_bytes() == debian12.artefact(kind).read_bytes(), kind
    assert tree_digest(again.artefact("rootfs")) == tree_digest(debian12.artefact("rootfs"))


@pytest.mark.slow
def test_build_from_an_earlier_box_says_what_the_mirror_lacks(debian12, tmp_path):
    """--from installs the versions an earlier box.json lists where the mirror has them;
    one it has not is named, and the box is built all the same."""
    meta = json.loads((debian12.path / "box.json").read_text())
    assert meta["packages"]
    meta["packages"] = [p if not p.startswith("sudo=") else "sudo=0.0-notonthemirror" for p in meta["packages"]]
    (tmp_path / "box.json").write_text(json.dumps(meta))
    result = vbox("box", "build", "debian-12", "--from", str(tmp_path / "box.json"),
                  env={"VBOX_HOME": str(tmp_path / "home")}, timeout=1800, check_rc=0)
    said = result.stdout + result.stderr
    assert "the mirror does not have sudo=0.0-notonthemirror: the box has sudo=" in said
    assert "the digest will differ" in said
    rebuilt = BoxStore(tmp_path / "home" / "boxes").find("debian-12")
    assert any(p.startswith("sudo=") and p != "sudo=0.0-notonthemirror" for p in rebuilt.meta.packages)
    bad = vbox("box", "build", "debian-12", "--from", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
