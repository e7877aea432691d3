"""File names and locations, in one place."""

from __future__ import annotations

import os
from pathlib import Path

ENVFILE = "Envfile"
STATE_DIR = ".vbox"
GITIGNORE = ".gitignore"

# Where boxes and host-wide state live. Root uses /var/lib/vbox, where libvirt's QEMU
# process and LXC can read the box files; a user without root gets a folder of their own.
SYSTEM_HOME = Path("/var/lib/vbox")
SYSTEM_CACHE = Path("/var/cache/vbox")


def vbox_home() -> Path:
    if env := os.environ.get("VBOX_HOME"):
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_HOME
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "vbox"


def vbox_cache() -> Path:
    if env := os.environ.get("VBOX_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "vbox"


def box_store_dir() -> Path:
    return vbox_home() / "boxes"


def find_envfile(start: Path | None = None) -> Path | None:
    """The Envfile of the project that contains `start` (default: the current folder)."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / ENVFILE
        if path.is_file():
            return path
    return None


def display_name(path: Path) -> str:
    """A path as the user would write it: relative when under the current folder."""
    try:
        if path.is_absolute() and path.is_relative_to(Path.cwd()):
            return os.path.relpath(path)
    except (OSError, ValueError):
        pass
    return str(path)
