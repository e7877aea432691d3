"""What makes root's build and a user's build (in her user namespace) give the same box:
/dev the same in the tree, device nodes only in the image (by debugfs), the mount points'
times, and no environment of the caller's in the build's programs."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from boxes import reproducible
from boxes.build import _build_env
from boxes.recipe import load

EPOCH = 1_700_000_000


def test_dev_in_the_tree_is_the_same_whatever_debootstrap_left(tmp_path):
    as_root, in_userns = tmp_path / "root", tmp_path / "user"
    for tree in (as_root, in_userns):
        (tree / "dev/pts").mkdir(parents=True)
    os.mknod(as_root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # root's debootstrap: nodes
    (as_root / "dev/shm").mkdir()
    (in_userns / "dev/null").write_text("")  # in a user namespace: a file it bound /dev/null onto
    (in_userns / "dev/ptmx").symlink_to("pts/ptmx")
    (in_userns / "dev/pts/stale").write_text("x")
    for tree in (as_root, in_userns):
        reproducible.reset_dev(tree)

    def listing(tree):
        return sorted((e.name, stat.S_IFMT(os.lstat(e.path).st_mode), os.readlink(e.path) if e.is_symlink() else "",
                       sorted(os.listdir(e.path)) if e.is_dir(follow_symlinks=False) else [])
                      for e in os.scandir(tree / "dev"))

    assert listing(as_root) == listing(in_userns)
    assert {name for name, kind, *_ in listing(as_root)} == {*reproducible.DEV_DIRS, *reproducible.DEV_LINKS}
    assert not any(kind in (stat.S_IFCHR, stat.S_IFREG) for _, kind, *_ in listing(as_root))


def test_the_image_gets_the_device_nodes_owned_by_root_and_stamped(tmp_path):
    """In a real ext4 image, read back by debugfs: mknod there needs no privilege."""
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    reproducible.reset_dev(tree)
    image = tmp_path / "disk.raw"
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(EPOCH)}
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image), "16M"], env=env, check=True)
    reproducible.set_times(tree, image, EPOCH, {"E2FSPROGS_FAKE_TIME": str(EPOCH)})
    for name, major, minor, mode in reproducible.DEVICES:
        shown = subprocess.run(["debugfs", "-R", f"stat /dev/{name}", str(image)], capture_output=True,
                               text=True, check=True).stdout
        assert "Type: character special" in shown and f"Mode:  {mode:04o}" in shown, shown
        assert "User:     0   Group:     0" in shown
        assert f"Device major/minor number: {major:02x}:{minor:02x}" in shown
        assert shown.count(f"0x{EPOCH:x}") == 4  # ctime, atime, mtime, crtime
    listed = subprocess.run(["debugfs", "-R", "ls /dev", str(image)], capture_output=True, text=True,
                            check=True).stdout
    assert "ptmx" in listed and "pts" in listed


def test_the_mount_points_times_are_the_recipes_date(tmp_path):
    for name in ("proc", "sys"):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (EPOCH - 86400 * 365, EPOCH - 86400 * 365))  # older than the date
    (tmp_path / "etc").mkdir()
    os.utime(tmp_path / "etc", (EPOCH - 100, EPOCH - 100))
    reproducible.normalize(tmp_path, EPOCH)
    assert os.stat(tmp_path / "proc").st_mtime == os.stat(tmp_path / "sys").st_mtime == EPOCH
    assert os.stat(tmp_path / "etc").st_mtime == EPOCH - 100  # a package's older date is kept


@pytest.mark.parametrize("caller", [{}, {"PYTHONDONTWRITEBYTECODE": "1"}, {"PYTHONDONTWRITEBYTECODE": ""}])
def test_the_build_environment_does_not_depend_on_the_callers(monkeypatch, caller):
    """A caller with or without PYTHONDONTWRITEBYTECODE gave .pyc files of two kinds."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    for key, value in caller.items():
        monkeypatch.setenv(key, value)
    seen = {**os.environ, **_build_env(load("debian-12"))}
    assert seen["PYTHONDONTWRITEBYTECODE"] == "1" and seen["SOURCE_DATE_EPOCH"] == str(load("debian-12").epoch)
