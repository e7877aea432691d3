"""A project's id, from its folder. Only os and hashlib: `env ssh`'s fast path needs it
before anything else of vbox is loaded."""

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
