"""A full disk, on small file systems the tests make (an ext4 image, loop-mounted): a box
import, `env up` and a box build fail with a clear message (no traceback), leave no
partial box or machine, and work once space is freed."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from boxes.archive import export
from boxes.store import STAGING, BoxStore
from providers.leaks import find as find_leaks
from tests.integration.conftest import vbox
from tests.integration.test_lxc import Project
from tests.unit.test_box_archive import make_box


@contextmanager
def small_fs(tmp_path: Path, name: str, size: str, inodes: int | None = None):
    image, mount = tmp_path / f"{name}.img", tmp_path / name
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", *(["-N", str(inodes)] if inodes else []), str(image)], check=True)
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(folder: Path, files: int = 0, space: bool = True) -> list[Path]:
    """Take that many of the file system's inodes, and (with `space`) its free space."""
    made = []
    for i in range(files):
        path = folder / f"filler-{i}"
        try:
            path.touch()
        except OSError:
            break
        made.append(path)
    if space:
        for size in ("64k", "1k"):  # then what is left in smaller blocks
            big = folder / f"filler-{size}"
            subprocess.run(["dd", "if=/dev/zero", f"of={big}", f"bs={size}"], capture_output=True)
            made.append(big)
        assert os.statvfs(folder).f_bavail == 0
    return made


def test_box_import_on_a_full_store(host, tmp_path):
    source = BoxStore(tmp_path / "source")
    export(make_box(source, "tiny"), tmp_path / "tiny.box")
    with small_fs(tmp_path, "home", "16M", inodes=64) as home:
        fillers = fill(home, files=48, space=False)  # room for the bytes, not for the tree's files
        result = vbox("box", "import", str(tmp_path / "tiny.box"), env={"VBOX_HOME": str(home)})
        assert result.returncode == 1
        assert "cannot write the box" in result.stderr and "No space left on device" in result.stderr
        assert "nothing was written" in result.stderr
        store = BoxStore(home / "boxes")
        staging = home / "boxes" / STAGING
        assert store.boxes() == [] and (not staging.exists() or not any(staging.iterdir()))
        for path in fillers:  # space freed: the same import works
            path.unlink()
        vbox("box", "import", str(tmp_path / "tiny.box"), env={"VBOX_HOME": str(home)}, check_rc=0)
        assert [b.name for b in store.boxes()] == ["tiny"]


def test_up_in_a_full_project_folder(debian12, tmp_path):
    with small_fs(tmp_path, "project", "8M") as folder:
        project = Project(folder)
        project.write("[machines.web]\nfolders = []\n")
        fillers = fill(folder)
        try:
            result = project.env("up", check_rc=1)
            assert "No space left on device" in result.stderr and "internal error" not in result.stderr
            assert find_leaks(project.id) == []  # nothing made before the project could keep its records
            for path in fillers:
                path.unlink()
            project.env("up")
            assert project.ssh("web", "echo ok") == "ok\n"
        finally:  # before the folder is unmounted: its Envfile and records say what to remove
            for path in fillers:
                path.unlink(missing_ok=True)
            project.env("destroy", "-f", check_rc=None)
        assert find_leaks(project.id) == []


def test_box_build_on_a_full_store(host, tmp_path):
    with small_fs(tmp_path, "home", "160M") as home:  # refused before anything is fetched
        result = vbox("box", "build", "debian-12", env={"VBOX_HOME": str(home)}, timeout=1800)
        assert result.returncode == 1 and "internal error" not in result.stderr
        assert "not enough space for a box build" in result.stderr and "MiB free" in result.stderr
        assert BoxStore(home / "boxes").boxes() == []
    with small_fs(tmp_path, "home2", "2300M") as home:  # room at first, filled while debootstrap works
        fillers = []

        def fill_soon():
            import time

            time.sleep(8)
            fillers.extend(fill(home))

        import threading

        filler = threading.Thread(target=fill_soon)
        filler.start()
        result = vbox("box", "build", "debian-12", env={"VBOX_HOME": str(home)}, timeout=1800)
        filler.join()
        assert result.returncode == 1 and "internal error" not in result.stderr
        assert "full" in result.stderr or "No space left on device" in result.stderr, result.stderr
        assert BoxStore(home / "boxes").boxes() == []
        staging = home / "boxes" / STAGING
        assert not staging.exists() or not any(staging.iterdir())
        with open("/proc/self/mountinfo") as f:  # debootstrap's /proc and /sys went with the staging folder
            assert not [line for line in f if str(home) + "/" in line.split()[4]]
    os.sync()
