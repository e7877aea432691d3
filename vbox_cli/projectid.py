"""A project's folder and id. Only os and hashlib: `env`'s first decision and `env ssh`'s
fast path need them before anything else of vbox is loaded."""

import hashlib
import os

_SLUG = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def project_id(folder) -> str:
    """`<slug>-<hash>`: the folder's name, runs of anything but [a-z0-9] made one `-`, cut
    to 12 characters; and 6 hex of the sha256 of its real path."""
    real = os.path.realpath(folder)
    slug, dash = [], False
    for c in os.path.basename(real).lower():
        if c in _SLUG:
            slug.append(c)
            dash = False
        elif not dash:
            slug.append("-")
            dash = True
    name = "".join(slug).strip("-")[:12].strip("-") or "project"
    return f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:6]}"


def project_folder(start: str | None = None) -> str | None:
    """The nearest folder from `start` (default: the current one) upwards that has an
    Envfile, as a real path; None outside a project."""
    folder = os.path.realpath(start or os.getcwd())
    while True:
        if os.path.isfile(os.path.join(folder, "Envfile")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
