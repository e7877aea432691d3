"""An LXC machine's own layer on plain folders (no container): what vbox writes into it,
with the box's folders' owners and modes; snapshots of it, and a restore cut short."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from providers import lxc_layer as layer
from providers.lxc_config import CONFIG, UPPER
from providers.subids import IdRange
from vbox_cli.errors import VboxError


def box_tree(root: Path) -> Path:
    lower = root / "rootfs"
    (lower / "etc/ssh").mkdir(parents=True)
    os.chown(lower / "etc/ssh", 0, 7)
    os.chmod(lower / "etc/ssh", 0o750)
    (lower / "home").symlink_to("/root")  # a link in the box may lead to this host's files
    return lower


@pytest.mark.parametrize("ids", [None, IdRange(1048576, 1048576)], ids=["privileged", "unprivileged"])
def test_files_written_into_the_layer_take_the_box_folders_attributes(tmp_path, ids):
    lower, upper = box_tree(tmp_path), tmp_path / "upper"
    upper.mkdir()
    files = {"etc/ssh/sshd_config.d/vbox.conf": ("PasswordAuthentication no\n", 0o600, "root"),
             "home/vbox/.ssh/authorized_keys": ("ssh-ed25519 AAAA\n", 0o600, "vbox")}
    owners = {"root": (0, 0), "vbox": (1000, 1000)}
    layer.write_files(upper, lower, files, ids, owners.__getitem__)
    shift = (lambda u, g: (u, g)) if ids is None else ids.shift
    ssh = (upper / "etc/ssh").stat()
    assert (ssh.st_uid, ssh.st_gid, ssh.st_mode & 0o7777) == (*shift(0, 7), 0o750)  # the box's, shifted
    # not through the box's link to /root: a plain folder of root's, 0755
    home = (upper / "home").stat()
    assert (home.st_uid, home.st_gid, home.st_mode & 0o7777) == (*shift(0, 0), 0o755)
    key = (upper / "home/vbox/.ssh/authorized_keys").stat()
    assert (key.st_uid, key.st_gid, key.st_mode & 0o7777) == (*shift(1000, 1000), 0o600)
    assert (upper / "etc/ssh/sshd_config.d/vbox.conf").read_text() == "PasswordAuthentication no\n"
    layer.mask_unit(upper, lower, "sys-kernel-debug.mount", ids)
    layer.mask_unit(upper, lower, "sys-kernel-debug.mount", ids)  # again: still one link
    masked = upper / "etc/systemd/system/sys-kernel-debug.mount"
    assert os.readlink(masked) == "/dev/null" and os.lstat(masked).st_uid == shift(0, 0)[0]
    layer.unmask_unit(upper, "sys-kernel-debug.mount")
    assert not os.path.lexists(masked)
    layer.unmask_unit(upper, "sys-kernel-debug.mount")  # again: nothing to do


def test_a_link_the_machine_made_in_its_layer_is_never_written_through(tmp_path):
    """The machine's root may replace a folder of its layer with a link to this host's
    (here: a folder outside standing for /etc/cron.d): vbox's later writes into the layer
    (networkd's files at every start, unit masks) refuse it, and touch nothing outside."""
    lower, upper, outside = box_tree(tmp_path), tmp_path / "upper", tmp_path / "host-etc"
    (upper / "etc/systemd").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("host file\n")
    (upper / "etc/systemd/network").symlink_to(outside)
    (upper / "etc/systemd/system").symlink_to(outside)
    with pytest.raises(VboxError, match="etc/systemd/network is not a folder"):
        layer.write_files(upper, lower, {"etc/systemd/network/11-vbox-net1.network": ("x", 0o644, "root")}, None,
                          lambda owner: (0, 0))
    with pytest.raises(VboxError, match="etc/systemd/system is not a folder"):
        layer.mask_unit(upper, lower, "systemd-networkd.service")
    (outside / "systemd-networkd.service").symlink_to("/dev/null")  # a mask there: not vbox's to remove
    layer.unmask_unit(upper, "systemd-networkd.service")
    assert sorted(p.name for p in outside.iterdir()) == ["keep", "systemd-networkd.service"]
    assert not layer.plain_folder(upper, "etc/systemd/network") and layer.plain_folder(upper, "etc/systemd")


@contextmanager
def stopped():
    yield False


def test_snapshots_save_restore_delete_and_a_restore_cut_short(tmp_path):
    folder = tmp_path / "vbox-demo-abc123-web"
    upper = folder / UPPER  # delta/upper: beside it, upper.new and upper.old of a restore
    (upper / "etc").mkdir(parents=True)
    (folder / UPPER / "etc/motd").write_text("one\n")
    saved = layer.save_snapshot(folder, "first", stopped)
    assert saved.name == "first" and not saved.running
    assert [s.name for s in layer.snapshots(folder)] == ["first"]
    with pytest.raises(VboxError, match="has a snapshot named first already"):
        layer.save_snapshot(folder, "first", stopped)
    with pytest.raises(VboxError):
        layer.save_snapshot(folder, "../out", stopped)  # a name is checked before it is a path
    assert not (tmp_path / "out").exists()

    (folder / UPPER / "etc/motd").write_text("two\n")
    (folder / UPPER / "etc/new").write_text("made after\n")
    layer.restore_snapshot(folder, "first")
    assert (folder / UPPER / "etc/motd").read_text() == "one\n" and not (folder / UPPER / "etc/new").exists()
    assert (folder / "snapshots/first/upper/etc/motd").read_text() == "one\n"  # the snapshot stays

    # a restore killed between its two renames: the new layer is whole, the old one aside
    (folder / CONFIG).write_text("lxc.uts.name = web\n")
    (folder / UPPER / "etc/motd").write_text("old\n")
    (folder / UPPER).rename(upper.with_name("upper.old"))
    layer.copy_tree(folder / "snapshots/first/upper", upper.with_name("upper.new"), folder)
    layer.settle(folder)
    assert (folder / UPPER / "etc/motd").read_text() == "one\n"
    assert not (upper.with_name("upper.new")).exists() and not (upper.with_name("upper.old")).exists()
    # killed with only the old layer aside: it is put back
    (folder / UPPER).rename(upper.with_name("upper.old"))
    layer.settle(folder)
    assert (folder / UPPER / "etc/motd").read_text() == "one\n"
    # killed while a machine with a disk of its own (no room for two layers) copied the new one
    layer.discard(folder / UPPER)
    (upper.with_name("upper.new")).mkdir()
    with pytest.raises(VboxError, match="was being restored from a snapshot") as info:
        layer.settle(folder)
    assert "snapshot restore" in info.value.hint
    layer.restore_snapshot(folder, "first")  # as the hint says: again
    assert (folder / UPPER / "etc/motd").read_text() == "one\n" and not (upper.with_name("upper.new")).exists()

    (folder / "snapshots/.half.partial").mkdir()  # a save cut short, and an info not vbox's: not listed
    (folder / "snapshots/broken").mkdir()
    (folder / "snapshots/broken/info.json").write_text(json.dumps({"created": "x"}))
    assert [s.name for s in layer.snapshots(folder)] == ["first"]
    layer.delete_snapshot(folder, "first")
    assert layer.snapshots(folder) == []
    with pytest.raises(VboxError, match="has no snapshot named first"):
        layer.restore_snapshot(folder, "first")


def test_a_freeze_that_fails_half_way_is_undone(tmp_path, monkeypatch):
    """lxc-freeze killed after it wrote FROZEN (seen on the fresh host, whose cgroup view is
    not its own) left the container frozen, and the next step's SSH session waited for an
    hour: a failed freeze is thawed before the error goes up."""
    from providers import lxc_freeze
    from providers.lxc import LxcProvider
    from providers.lxc_freeze import FROZEN_MARK

    provider = LxcProvider(tmp_path)
    folder = provider.folder("vbox-demo-abc123-db")
    (folder / UPPER).mkdir(parents=True)
    (folder / CONFIG).write_text("lxc.uts.name = db\n")
    calls = []

    def freeze(machines, name, pid, frozen):
        calls.append(frozen)
        if frozen:
            raise VboxError("command failed with exit status -15: lxc-freeze")

    monkeypatch.setattr(provider, "init_pid", lambda name: 4242)
    monkeypatch.setattr(lxc_freeze, "freeze", freeze)
    with pytest.raises(VboxError, match="lxc-freeze"):
        provider.snapshot_save("vbox-demo-abc123-db", "before")
    assert calls == [True, False] and not (folder / FROZEN_MARK).exists()
    assert provider.snapshots("vbox-demo-abc123-db") == [] and not list((folder / "snapshots").iterdir())


def test_a_disk_is_checked_and_grown_only_once_no_mount_namespace_holds_it(tmp_path, monkeypatch):
    """A stopped container's mount namespace lets go of its disk after lxc-stop returns:
    fit_disk waits for the loop device to go before e2fsck and resize2fs touch the image."""
    import subprocess
    import threading
    import time

    from vbox_cli import proc

    mib = 1024 * 1024
    layer.make_disk(tmp_path, 32 * mib)
    image = tmp_path / layer.DISK_IMAGE
    assert layer.attached_loops(image) and os.path.ismount(tmp_path / layer.LAYER)
    # another mount namespace with the disk in it, as a container's that is being torn down
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        subprocess.run(["umount", str(tmp_path / layer.LAYER)], check=True)
        assert layer.attached_loops(image)  # unmounted here, alive there
        with pytest.raises(VboxError, match="still in use"):
            layer.wait_released(image, timeout=0.3)
        seen = []
        real_run = proc.run

        def recording(argv, **kwargs):
            if argv[0] in ("e2fsck", "resize2fs"):
                seen.append((argv[0], layer.attached_loops(image)))
            return real_run(argv, **kwargs)

        monkeypatch.setattr(proc, "run", recording)
        threading.Timer(0.5, holder.kill).start()
        layer.fit_disk(tmp_path, 64 * mib)
    finally:
        holder.kill()
        holder.wait()
    assert seen == [("e2fsck", []), ("resize2fs", [])]
    assert layer.fs_size(image) == 64 * mib and not layer.attached_loops(image)


def test_networkd_is_masked_at_a_start_unless_a_network_asks_dhcp(tmp_path):
    from types import SimpleNamespace

    from providers.lxc_config import NETWORKD_UNITS

    lower, folder = box_tree(tmp_path), tmp_path / "machine"
    (folder / UPPER).mkdir(parents=True)
    box = SimpleNamespace(meta=SimpleNamespace(recipe="debian-12"), artefact=lambda kind: lower)
    dhcp = SimpleNamespace(address="", mac="00:16:3e:00:00:01")
    units = folder / UPPER / "etc/systemd/system"

    layer.write_network_files(folder, SimpleNamespace(box=box, networks=[]))
    assert all(os.readlink(units / unit) == "/dev/null" for unit in NETWORKD_UNITS)
    layer.write_network_files(folder, SimpleNamespace(box=box, networks=[dhcp]))  # a DHCP network added
    assert not any(os.path.lexists(units / unit) for unit in NETWORKD_UNITS)
    assert "DHCP=yes" in (folder / UPPER / "etc/systemd/network/11-vbox-net1.network").read_text()
    layer.write_network_files(folder, SimpleNamespace(box=box, networks=[]))  # and gone again
    assert not (folder / UPPER / "etc/systemd/network/11-vbox-net1.network").exists()
    assert all(os.readlink(units / unit) == "/dev/null" for unit in NETWORKD_UNITS)
