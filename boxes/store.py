"""The box store: built boxes, their metadata and who uses them.

Layout under `root` (default: /var/lib/vbox/boxes for root):

    NAME/VERSION/box.json    metadata: digest, recipe digest, artefacts, sizes
    NAME/VERSION/rootfs/     the unpacked root tree (LXC's lower layer)
    NAME/VERSION/disk.qcow2  bootable disk (KVM, Xen), with vmlinuz and initrd.img
    NAME/VERSION/xen         a Xen host box only: the hypervisor's multiboot image
    .build/                  staging folders of builds in progress (never a box)
    .locks/NAME.lock         one build or removal of a box at a time
    uses/NAME/ID.json        one file for each machine made from the box

A box appears in NAME/VERSION only by an atomic rename of a finished staging folder,
so the store never holds a half-built box.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from boxes.meta import ARTEFACTS, BoxMeta
from vbox_cli.errors import UsageError, VboxError

__all__ = ["ARTEFACTS", "Box", "BoxStore", "discard", "folder_name", "mounts_under"]
META = "box.json"
STAGING = ".build"
LOCKS = ".locks"
USES = "uses"
SLASH = "@"  # "team/debian-12" is kept in the folder "team@debian-12" (names have no "@")


def folder_name(name: str) -> str:
    """The store's folder of a box name (an "org/name" one is a single folder)."""
    return name.replace("/", SLASH)


@dataclass(frozen=True)
class Box:
    name: str
    version: str
    path: Path
    meta: BoxMeta

    def __post_init__(self) -> None:
        if isinstance(self.meta, dict):
            object.__setattr__(self, "meta", BoxMeta.from_dict(self.meta))

    @property
    def digest(self) -> str:
        return self.meta.digest

    @property
    def size(self) -> int:
        return int(self.meta.size)

    def artefact(self, kind: str) -> Path:
        return self.path / ARTEFACTS[kind]

    @property
    def artefacts(self) -> list[str]:
        return [kind for kind in ARTEFACTS if self.artefact(kind).exists()]


class BoxStore:
    """A user's store; a user without root also reads the system's store (boxes are
    built by root, with debootstrap), and writes only to their own."""

    def __init__(self, root: Path | None = None, shared: list[Path] | None = None):
        if root is None:
            import os

            from vbox_cli.paths import SYSTEM_HOME, box_store_dir

            root = box_store_dir()
            # an explicit VBOX_HOME is a store of its own; a user's default one reads root's too
            if shared is None and "VBOX_HOME" not in os.environ and root != SYSTEM_HOME / "boxes":
                shared = [SYSTEM_HOME / "boxes"]
        self.root = root
        self.shared = shared or []

    # -- reading ---------------------------------------------------------------
    def boxes(self) -> list[Box]:
        found = self._boxes_in(self.root)
        for root in self.shared:
            found += self._boxes_in(root)
        return found

    @staticmethod
    def _boxes_in(root: Path) -> list[Box]:
        found = []
        if not root.is_dir():
            return found
        for meta_path in sorted(root.glob(f"*/*/{META}")):
            name, version = meta_path.parent.parent.name.replace(SLASH, "/"), meta_path.parent.name
            if name.startswith(".") or name == USES:
                continue
            try:
                meta = BoxMeta.from_dict(json.loads(meta_path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            found.append(Box(name, version, meta_path.parent, meta))
        return found

    def find(self, name: str, version: str | None = None) -> Box | None:
        """The box of that name (the newest version unless one is given)."""
        matches = [b for b in self.boxes() if b.name == name and (version is None or b.version == version)]
        if not matches:
            return None
        return max(matches, key=lambda b: b.meta.built)

    def get(self, name: str) -> Box:
        box = self.find(name)
        if box is None:
            raise VboxError(f"no box named {name!r} in the store ({self.root})", hint=f"run `env box build {name}`")
        return box

    # -- writing ---------------------------------------------------------------
    def lock(self, name: str, on_wait=None):
        from vbox_cli.locks import exclusive

        return exclusive(self.root / LOCKS / f"{folder_name(name)}.lock", on_wait)

    def staging(self, name: str) -> Path:
        """A new, empty staging folder for a build of `name`, owned by this process: it
        holds a lock on the folder for as long as it lives (the lock goes with it, however
        it ends). A pid alone does not say who builds: a user's build is pid 1 of a PID
        namespace of its own, as every other one of hers is."""
        import fcntl
        import secrets

        base = self.root / STAGING
        base.mkdir(parents=True, exist_ok=True)
        self.sweep_staging()
        path = base / f"{folder_name(name)}.{os.getpid()}.{secrets.token_hex(4)}"
        path.mkdir()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD.append(fd)
        return path

    def sweep_staging(self) -> list[Path]:
        """Remove the staging folders of builds that are gone (killed): those whose lock
        nobody holds."""
        import fcntl

        removed = []
        base = self.root / STAGING
        if not base.is_dir():
            return removed
        for path in base.iterdir():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = None  # not a folder (or a link): nobody's build
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a build that runs
                finally:
                    os.close(fd)
            discard(path)
            removed.append(path)
        return removed

    def install(self, staged: Path, name: str, version: str, meta: BoxMeta | dict) -> Box:
        """Move a finished staging folder into place, replacing an older build of that version."""
        from vbox_cli.files import atomic_write

        meta = BoxMeta.from_dict(meta) if isinstance(meta, dict) else meta
        atomic_write(staged / META, json.dumps(meta.to_dict(), indent=2) + "\n")
        target = self.root / folder_name(name) / version
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists():
            old = self.root / STAGING / f"{folder_name(name)}.replaced.{os.getpid()}"
            os.rename(target, old)
        os.rename(staged, target)
        if old is not None:
            discard(old)
        return Box(name, version, target, meta)

    def remove(self, box: Box, force: bool = False) -> None:
        if not box.path.is_relative_to(self.root):
            raise UsageError(f"box {box.name} {box.version} is in the system's store ({box.path.parent.parent})",
                             hint="remove it as root")
        users = self.users(box.name)
        if users and not force:
            names = ", ".join(sorted(users))
            raise UsageError(
                f"box {box.name!r} is used by {len(users)} machine{'s' if len(users) != 1 else ''}: {names}",
                hint="destroy those machines first, or pass --force",
            )
        with self.lock(box.name):
            discard(box.path)
            parent = box.path.parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()

    # -- who uses a box --------------------------------------------------------
    def add_user(self, box_name: str, machine_id: str, info: dict) -> None:
        from vbox_cli.files import atomic_write

        folder = self.root / USES / folder_name(box_name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{machine_id}.json", json.dumps(info) + "\n")

    def remove_user(self, box_name: str, machine_id: str) -> None:
        folder = self.root / USES / folder_name(box_name)
        (folder / f"{machine_id}.json").unlink(missing_ok=True)
        try:
            folder.rmdir()  # the last one
        except OSError:
            pass

    def user_records(self, box_name: str) -> dict[str, dict]:
        records = {}
        for machine_id in self.users(box_name):
            try:
                records[machine_id] = json.loads((self.root / USES / folder_name(box_name) /
                                                  f"{machine_id}.json").read_text())
            except (OSError, ValueError):
                records[machine_id] = {}
        return records

    def users(self, box_name: str) -> list[str]:
        folder = self.root / USES / folder_name(box_name)
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


_HELD: list[int] = []  # this process's staging locks: released when it ends


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = os.path.realpath(path)
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if point == prefix or point.startswith(prefix + "/"):
                    points.append(point)
    except OSError:
        pass
    return sorted(points, key=len, reverse=True)


def discard(path: Path) -> None:
    """Remove a tree that a build may have left mounts in (debootstrap mounts /proc, /sys)."""
    if not os.path.lexists(path):
        return
    from vbox_cli import proc

    for point in mounts_under(path):
        proc.run(["umount", "-l", point], check=False)
    if mounts_under(path):
        raise VboxError(f"cannot remove {path}: file systems are still mounted under it")
    if not (path.is_dir() and not path.is_symlink()):
        path.unlink()
        return
    for attempt in range(5):
        try:
            shutil.rmtree(path)
            return
        except PermissionError:
            if os.geteuid() == 0:
                raise
            # a tree a user built in her user namespace has files of her subordinate ids
            from boxes import userns

            userns.remove(path)
            return
        except OSError:
            # a killed build's last child process may still be writing into the tree
            if attempt == 4:
                raise
            import time

            time.sleep(1)
