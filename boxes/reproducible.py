"""What makes a box build reproducible, besides the recipe's date given to the build as
SOURCE_DATE_EPOCH: the files a build stamps whatever the packages are, left out; the
tree's times clamped to the date; and the ext4 image's inode times set to it."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from vbox_cli import proc
from vbox_cli.errors import VboxError

# Files the build leaves that differ from one build to the next, whatever the packages:
# logs, caches with inode numbers and times in them, backups, apt's locks.
UNSTABLE = ("var/log/**/*", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
            "etc/*-", "var/lib/systemd/catalog/database", "var/lib/apt/lists/lock", "var/cache/apt/archives/lock",
            "var/lib/dpkg/lock", "var/lib/dpkg/lock-frontend")


def normalize(rootfs: Path, epoch: int) -> None:
    """The same packages give the same tree: what a build stamps is taken out or set to
    the recipe's date, and no file is newer than it."""
    for pattern in UNSTABLE:
        for path in glob.glob(str(rootfs / pattern), recursive=True):
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
    days = epoch // 86400  # /etc/shadow's "last changed" field, in days
    for name in ("etc/shadow", "etc/gshadow"):
        path = rootfs / name
        if path.is_file():
            lines = []
            for line in path.read_text().splitlines():
                fields = line.split(":")
                if name == "etc/shadow" and len(fields) > 2 and fields[2]:
                    fields[2] = str(days)
                lines.append(":".join(fields))
            mode = path.stat().st_mode
            path.write_text("\n".join(lines) + "\n")
            os.chmod(path, mode & 0o7777)
    for root, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            _clamp(os.path.join(root, name), epoch)
    _clamp(str(rootfs), epoch)


def _clamp(path: str, epoch: int) -> None:
    info = os.lstat(path)
    if info.st_mtime > epoch or info.st_atime > epoch:
        os.utime(path, (min(info.st_atime, epoch), min(info.st_mtime, epoch)), follow_symlinks=False)


def set_times(rootfs: Path, image: Path, epoch: int, env: dict[str, str]) -> None:
    """Every inode's change and access times in the image set to `epoch` (one debugfs session)."""
    commands = [f"sif / ctime @{epoch}", f"sif / atime @{epoch}"]
    for root, dirs, files in os.walk(rootfs):
        for name in sorted(dirs + files):
            relative = "/" + os.path.relpath(os.path.join(root, name), rootfs)
            if any(c in relative for c in '"\n'):
                raise VboxError(f"the box has a file whose name debugfs cannot take: {relative!r}")
            commands += [f'sif "{relative}" ctime @{epoch}', f'sif "{relative}" atime @{epoch}']
    script = image.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    try:
        proc.run(["debugfs", "-w", "-f", str(script), str(image)], env=env, timeout=1800)
    finally:
        script.unlink(missing_ok=True)
