"""vbox for a user without root: KVM machines in qemu:///session (user-mode networking,
SSH through a port forwarded on 127.0.0.1) or through the system libvirt (a libvirt group
member), and boxes she builds in a user namespace of her own. The tool runs as a
throw-away unprivileged user, from a virtualenv made with the system's Python (as such a
user would have it)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

USER = "vbox-session-test"
REPO = Path(__file__).resolve().parent.parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def _user_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def unprivileged(debian12):
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is needed to run vbox as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="vbox-session-", dir="/tmp"))
    os.chmod(base, 0o755)
    home = base / "home"
    try:
        pwd.getpwnam(USER)
        subprocess.run(["userdel", "--force", USER], check=False)
    except KeyError:
        pass
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", USER], check=True)
    uid = pwd.getpwnam(USER).pw_uid
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
                   check=True, timeout=900)
    try:
        yield {"venv": venv, "home": home, "uid": uid}
    finally:
        # everything this user runs was started by this test (its libvirtd, virtlogd, QEMU)
        for pid in _user_pids(uid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _user_pids(uid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _user_pids(uid):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["userdel", "--force", "--remove", USER], check=False)
        shutil.rmtree(base, ignore_errors=True)


def as_user(ctx, folder: Path, *args: str, check_rc: int | None = 0, timeout: float = 600):
    environ = {"HOME": str(ctx["home"]), "PATH": f"{ctx['venv']}/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    result = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in environ.items()],
                             str(ctx["venv"] / "bin" / "vbox"), "--plain", *args],
                            cwd=folder, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def virsh_session(ctx, *args: str) -> str:
    return subprocess.run(["runuser", "-u", USER, "--", "env", f"HOME={ctx['home']}", "virsh", "-c",
                           "qemu:///session", *args], capture_output=True, text=True, timeout=60).stdout


def test_kvm_machine_in_a_user_session(unprivileged):
    folder = unprivileged["home"] / "project"
    folder.mkdir()
    (folder / "Envfile").write_text('[machines.vm]\nprovider = "kvm"\nmemory = "768M"\n'
                                    'provision = [{ shell = "echo from session > /etc/motd" }]\n')
    subprocess.run(["chown", "-R", f"{USER}:", str(folder)], check=True)
    up = as_user(unprivileged, folder, "up")
    assert "libvirt qemu:///session (user-mode networking, SSH through 127.0.0.1)" in up.stdout
    status = json.loads(as_user(unprivileged, folder, "status", "--json").stdout)["machines"][0]
    assert status["state"] == "running" and status["address"].startswith("127.0.0.1:")
    assert as_user(unprivileged, folder, "ssh", "vm", "--", "cat /etc/motd; hostname").stdout == \
        "from session\nvm\n"
    assert os.stat(folder / ".vbox" / "id_ed25519").st_uid == unprivileged["uid"]
    assert "vbox-" in virsh_session(unprivileged, "list", "--all", "--name")
    # the box came from root's store: nothing was built
    assert not (unprivileged["home"] / ".local/share/vbox/boxes/debian-12").exists()
    as_user(unprivileged, folder, "destroy", "-f")
    assert "vbox-" not in virsh_session(unprivileged, "list", "--all", "--name")
    assert "vbox-" not in virsh_session(unprivileged, "vol-list", "vbox")
    assert not (folder / ".vbox").exists()


def _unprepare(user: str) -> None:
    """What `doctor --fix --user` gave her for LXC, taken back: her delegated cgroups (with
    what LXC left in them, all empty once her machines are gone) and her lxc-usernet lines."""
    from providers import lxc_user

    for group in lxc_user.delegated(user):
        for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            child.rmdir()
        if group.is_dir():
            group.rmdir()
    if lxc_user.USERNET.exists():
        lines = lxc_user.USERNET.read_text().splitlines(keepends=True)
        lxc_user.USERNET.write_text("".join(line for line in lines if line.split()[:1] != [user]))


@pytest.fixture(scope="module")
def prepared(unprivileged):
    """Root has run `env doctor --fix --user` for her."""
    from tests.integration.conftest import vbox

    try:
        yield vbox("doctor", "--fix", "--user", USER, check_rc=0).stdout
    finally:
        _unprepare(USER)


@pytest.fixture(scope="module")
def her_box(unprivileged):
    """debian-12 built by her, into her own store (once for the module)."""
    from boxes.store import BoxStore
    from providers import subids

    if subids.of_user(unprivileged["uid"]) is None:  # useradd gives a new user ids where login.defs says so
        subids.allocate(USER)

    built = as_user(unprivileged, unprivileged["home"], "box", "build", "debian-12", timeout=1800)
    assert "built box debian-12" in built.stdout, built.stdout + built.stderr
    box = BoxStore(unprivileged["home"] / ".local/share/vbox/boxes", shared=[]).find("debian-12")
    assert box is not None
    return box


def _lxc_project(ctx, name: str, envfile: str) -> Path:
    folder = ctx["home"] / name
    folder.mkdir()
    (folder / "Envfile").write_text(envfile)
    subprocess.run(["chown", "-R", f"{USER}:", str(folder)], check=True)
    return folder


@pytest.mark.exclusive  # doctor --fix --user restarts a libvirtd that started before the system bus
def test_an_lxc_machine_of_hers_needs_her_cgroups_and_a_box_of_her_own(unprivileged, debian12):
    """Before root prepared her: what she lacks, and who can give it. Then root's box (her
    store has none yet) cannot make her machine: its owners are root's."""
    folder = _lxc_project(unprivileged, "lxcproject", '[machines.ct]\nprovider = "lxc"\n')
    _unprepare(USER)  # a run cut short may have left hers
    try:
        result = as_user(unprivileged, folder, "up", check_rc=None)
        assert result.returncode != 0 and "no cgroup of yours" in result.stderr, result.stderr
        assert f"env doctor --fix --user {USER}" in result.stderr
        from tests.integration.conftest import vbox

        prepared = vbox("doctor", "--fix", "--user", USER, check_rc=0).stdout
        assert re.search(rf"lxc bridges \({USER}\)\s+ok", prepared), prepared
        assert re.search(rf"lxc cgroups \({USER}\)\s+ok", prepared), prepared
        result = as_user(unprivileged, folder, "up", check_rc=None)
        assert result.returncode != 0 and "root's box" in result.stderr and "env box build debian-12" in result.stderr
        assert as_user(unprivileged, folder, "destroy", "-f", check_rc=None).returncode == 0
        assert not (folder / ".vbox").exists()
    finally:
        _unprepare(USER)


def _her_veths(uid: int) -> list[str]:
    return [link for link in os.listdir("/sys/class/net") if link.startswith(f"veth{uid}_")]


@pytest.mark.slow
@pytest.mark.exclusive
def test_lxc_machines_of_a_user(unprivileged, prepared, her_box, other_user):
    """Her LXC machines: unprivileged containers of hers on her project network (a bridge
    lxc-usernet allows her), their limits seen inside through lxcfs, her synced folder
    written as herself; by name to each other and to her KVM machine on the same network;
    halted, up again, destroyed with nothing left (no container, veth, mount or cgroup of
    theirs); another user cannot touch them."""
    from providers import lxc_user, subids

    uid = unprivileged["uid"]
    folder = _lxc_project(unprivileged, "lxc-machines", '[defaults]\nprovider = "lxc"\nmemory = "300M"\n\n'
                          '[machines.one]\nprovision = [{ shell = "echo one > /etc/motd" }]\n\n[machines.two]\n\n'
                          '[machines.vm]\nprovider = "kvm"\nmemory = "768M"\n')
    from vbox_cli.project import project_id

    containers = unprivileged["home"] / ".local/share/vbox/lxc"
    project = project_id(folder)
    try:
        as_user(unprivileged, folder, "up", timeout=1200)
        status = {m["name"]: m for m in json.loads(as_user(unprivileged, folder, "status", "--json").stdout)["machines"]}
        assert {m["state"] for m in status.values()} == {"running"}
        assert as_user(unprivileged, folder, "ssh", "two", "--", "getent hosts one").stdout.split()[0] == \
            status["one"]["address"]
        assert as_user(unprivileged, folder, "ssh", "vm", "--", "getent hosts one").stdout.split()[0] == \
            status["one"]["address"]
        assert as_user(unprivileged, folder, "ssh", "one", "--", "getent hosts vm").stdout.split()[0] == \
            status["vm"]["address"]
        inside = as_user(unprivileged, folder, "ssh", "one", "--",
                         "cat /etc/motd; free -m | awk '/^Mem/ {print $2}'; id -u; touch /vbox/from-one; "
                         "cat /proc/self/uid_map | head -1").stdout.split("\n")
        assert inside[:3] == ["one", "300", "1000"], inside
        assert inside[3].split()[:2] == ["0", str(subids.of_user(uid).uid + 999)]  # its root is not her
        assert os.stat(folder / "from-one").st_uid == uid  # what its user writes there is hers
        # hers: her own container path, her bridge, her cgroups; none of root's
        assert sorted(p.name for p in containers.iterdir()) == [f"vbox-{project}-one", f"vbox-{project}-two"]
        bridge = json.loads(subprocess.run(["ip", "-j", "link", "show", _her_veths(uid)[0]], capture_output=True,
                                           text=True).stdout)[0]["master"]
        assert bridge in lxc_user.bridges(USER) and len(_her_veths(uid)) == 2
        assert (Path("/sys/fs/cgroup/memory") / f"vbox-{USER}" / f"lxc.payload.vbox-{project}-one").is_dir()
        assert not (Path("/var/lib/vbox/lxc") / f"vbox-{project}-one").exists()
        stats = {m["name"]: m for m in json.loads(as_user(unprivileged, folder, "stats", "--json").stdout)["machines"]}
        assert stats["one"]["memory_limit"] == 300 * 1024**2 and stats["one"]["net_in"] > 0
        # what needs root is said, not tried
        refused = as_user(unprivileged, folder, "suspend", "one", check_rc=None)
        assert refused.returncode != 0 and "run as root" in refused.stderr
        # another user: no key, no lock, not her container path
        refused = as_other(unprivileged, folder, "destroy", "-f")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert as_other(unprivileged, folder, "ssh", "one", "--", "true").returncode != 0
        as_user(unprivileged, folder, "halt", "one")
        assert len(_her_veths(uid)) == 1
        as_user(unprivileged, folder, "up", "one")
        assert as_user(unprivileged, folder, "ssh", "one", "--", "cat /etc/motd").stdout == "one\n"
        assert [str(p) for p in folder.rglob("*") if p.lstat().st_uid != uid] == []
    finally:
        gone = as_user(unprivileged, folder, "destroy", "-f", check_rc=None)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert list(containers.iterdir()) == []
    assert _her_veths(uid) == []
    assert [p for p in Path("/sys/fs/cgroup").glob(f"*/vbox-{USER}/lxc.payload.*")] == []
    assert not (folder / ".vbox").exists()
    from providers.leaks import find as find_leaks

    assert find_leaks(project) == []


OTHER = "vbox-session-other"


@pytest.mark.slow
def test_a_user_builds_a_box_in_her_user_namespace_with_roots_digest(unprivileged, debian12, her_box):
    """debootstrap as the root of her user namespace (her subordinate ids): into her own
    store, the same bytes as root's build of the same packages, her ids on every file, and
    removed by her again (files of her subordinate ids, from that namespace)."""
    from boxes.store import BoxStore
    from providers import subids

    home, uid = unprivileged["home"], unprivileged["uid"]
    ids = subids.of_user(uid)  # her_box gave her some if useradd did not
    mine = as_user(unprivileged, home, "doctor", check_rc=None).stdout
    assert re.search(r"box build\s+ok", mine), mine
    store = home / ".local/share/vbox/boxes"
    box = BoxStore(store, shared=[]).find("debian-12")
    assert box is not None and box.path == her_box.path and box.path.is_relative_to(store)
    if box.meta.packages != debian12.meta.packages:  # the mirror moved since the store's build
        pytest.fail("the mirror has other packages than when the store's box was built: "
                    "`env box build debian-12 --force`, then run again")
    assert box.digest == debian12.digest
    assert box.artefact("disk").read_bytes() == debian12.artefact("disk").read_bytes()
    # handed over to her LXC machines: their root is her subordinate id 999, their user is her
    tree = box.artefact("rootfs")
    assert os.lstat(tree).st_uid == ids.uid + 999 and os.lstat(tree / "home/vbox").st_uid == uid
    assert os.stat(tree / "usr/bin/sudo").st_mode & 0o4000
    entries = [os.lstat(p) for p in box.path.rglob("*")]
    gid = pwd.getpwnam(USER).pw_gid
    assert {e.st_uid for e in entries} - {uid} and all(e.st_uid == uid or ids.uid <= e.st_uid < ids.uid + 65536
                                                       for e in entries)
    assert all(e.st_gid == gid or ids.gid <= e.st_gid < ids.gid + 65536 for e in entries)
    # her box travels: exported as her machines see it (root's digest), imported back by her
    # under another name with their owners given, her metadata hers
    as_user(unprivileged, home, "box", "export", "debian-12", "-o", str(home / "d.box"), timeout=600)
    assert os.stat(home / "d.box").st_uid == uid
    as_user(unprivileged, home, "box", "import", str(home / "d.box"), "--name", "copy", timeout=600)
    copy = BoxStore(store, shared=[]).find("copy")
    assert copy is not None and copy.digest == box.digest
    assert os.lstat(copy.artefact("rootfs")).st_uid == ids.uid + 999 and os.stat(copy.path / "box.json").st_uid == uid
    as_user(unprivileged, home, "box", "remove", "copy")
    (home / "d.box").unlink()
    # interrupted (SIGTERM to her vbox, outside the namespace): the build inside unwinds
    environ = {"HOME": str(home), "PATH": f"{unprivileged['venv']}/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    again = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in environ.items()],
                              str(unprivileged["venv"] / "bin" / "vbox"), "--plain", "box", "build", "debian-12",
                              "--force"], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((store / ".build").glob("*/rootfs/usr")) and time.monotonic() < deadline:
        time.sleep(0.5)  # debootstrap is writing the tree
    outer = [pid for pid in _user_pids(uid) if "box build" in _cmdline(pid) and "unshare" not in _cmdline(pid)]
    os.kill(min(outer), signal.SIGTERM)  # the first of hers: the vbox she ran
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130 and "Traceback" not in err, err
    assert list((store / ".build").iterdir()) == []
    left = [_cmdline(pid) for pid in _user_pids(uid)]  # her session libvirtd may stay: not the build's
    assert not [c for c in left if any(word in c for word in ("unshare", "debootstrap", "box build"))], left
    as_user(unprivileged, home, "box", "remove", "debian-12")  # hers; root's stays
    assert not (store / "debian-12" / box.version).exists()
    assert BoxStore().find("debian-12", debian12.version) is not None
    assert not [p for p in home.rglob("*") if p.lstat().st_uid == 0]


@pytest.fixture
def other_user(unprivileged):
    """A second user, in no group of vbox's."""
    try:
        pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", OTHER], check=True)
    yield OTHER
    subprocess.run(["userdel", "--force", OTHER], check=False)


def as_other(ctx, folder: Path, *args: str):
    environ = {"HOME": "/tmp", "PATH": f"{ctx['venv']}/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["runuser", "-u", OTHER, "--", "env", "-i", *[f"{k}={v}" for k, v in environ.items()],
                           str(ctx["venv"] / "bin" / "vbox"), "--plain", *args],
                          cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.exclusive  # doctor --fix --user restarts a libvirtd that started before the system bus
def test_kvm_machines_of_a_libvirt_group_member(unprivileged, other_user):
    """Root prepares the user (`env doctor --fix --user`: the libvirt group, a system bus
    for polkit where no systemd runs one, subordinate ids); her KVM machines then go through
    the system libvirt, on the project network, reach each other by name, and leave nothing
    root-owned in her project; another user can neither reach nor destroy them."""
    from tests.integration.conftest import vbox

    prepared = vbox("doctor", "--fix", "--user", USER, check_rc=0).stdout
    assert f"libvirt group ({USER})" in prepared and f"libvirt access ({USER})" in prepared
    assert USER in grp.getgrnam("libvirt").gr_mem
    mine = as_user(unprivileged, unprivileged["home"], "doctor", check_rc=None).stdout
    assert re.search(r"libvirt access\s+ok", mine), mine
    folder = unprivileged["home"] / "group-project"
    folder.mkdir()
    (folder / "Envfile").write_text('[defaults]\nprovider = "kvm"\nmemory = "768M"\n\n'
                                    '[machines.one]\nprovision = [{ shell = "echo one > /etc/motd" }]\n\n'
                                    '[machines.two]\n')
    subprocess.run(["chown", "-R", f"{USER}:", str(folder)], check=True)
    from vbox_cli.project import project_id

    project = project_id(folder)
    try:
        up = as_user(unprivileged, folder, "up", timeout=1200)
        assert "libvirt qemu:///system" in up.stdout and "user-mode" not in up.stdout
        # what needs root here is said, not attempted: the default synced folder
        assert "no synced folder, because virtiofsd" in up.stdout
        listed = json.loads(as_user(unprivileged, folder, "status", "--json").stdout)["machines"]
        status = {m["name"]: m for m in listed}
        assert {m["state"] for m in status.values()} == {"running"}
        one = status["one"]["address"]
        assert not one.startswith("127.") and ":" not in one  # the project network, not a forwarded port
        # by name, from one machine to the other, over the project network's DNS
        assert as_user(unprivileged, folder, "ssh", "two", "--", "getent hosts one").stdout.split()[0] == one
        assert as_user(unprivileged, folder, "ssh", "one", "--", "cat /etc/motd").stdout == "one\n"
        names = subprocess.run(["virsh", "list", "--name"], capture_output=True, text=True).stdout.split()
        assert {f"vbox-{project}-one", f"vbox-{project}-two"} <= set(names)  # root's libvirt has them
        # another user: no key, no lock, no machine of hers
        refused = as_other(unprivileged, folder, "destroy", "-f")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert as_other(unprivileged, folder, "ssh", "one", "--", "true").returncode != 0
        assert as_user(unprivileged, folder, "status", "--json").stdout.count('"running"') == 2
        as_user(unprivileged, folder, "halt", "one")
        assert as_user(unprivileged, folder, "ssh", "two", "--", "true").returncode == 0
        as_user(unprivileged, folder, "up", "one", timeout=1200)
        assert as_user(unprivileged, folder, "ssh", "one", "--", "cat /etc/motd").stdout == "one\n"
        root_owned = [str(p) for p in folder.rglob("*") if p.lstat().st_uid != unprivileged["uid"]]
        assert root_owned == []  # no console log written by root's virtlogd in her project
    finally:
        gone = as_user(unprivileged, folder, "destroy", "-f", check_rc=None)
    from providers.leaks import find as find_leaks

    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert find_leaks(project) == []
    assert not (folder / ".vbox").exists(), sorted(str(p) for p in (folder / ".vbox").rglob("*"))
