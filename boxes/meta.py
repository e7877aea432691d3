"""Typed box metadata: what a box is, which files it has, how a machine boots from it
and how it receives its identity. Stored as box.json beside the box's files; unknown
keys (from a newer vbox) are kept, missing ones take the defaults of older boxes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# artefact kind -> file name in the box's folder
ARTEFACTS = {"rootfs": "rootfs", "disk": "disk.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
             "hypervisor": "xen"}


@dataclass(frozen=True)
class Boot:
    """How a VM boots from the box: its own kernel and initrd, straight from the host
    (no bootloader), with the root file system found by its label."""

    kernel: str | None = "kernel"  # artefact kinds; None: not present
    initrd: str | None = "initrd"
    root_label: str = "vbox-root"
    hypervisor: str | None = None  # a Xen host box: Xen's multiboot image


@dataclass(frozen=True)
class BoxMeta:
    digest: str
    name: str = ""
    version: str = ""
    description: str = ""
    user: str = "vbox"  # the default user, who gets the project's key
    # how a machine receives its identity (host key, authorized key, names) before its first
    # boot: "systemd" = tmpfiles.d lines that the box's systemd applies (an SMBIOS credential
    # on KVM, a seed disk on Xen, files in the overlay on LXC)
    identity: str = "systemd"
    boot: Boot = field(default_factory=Boot)
    # what the box's own services do for vbox: "virtiofs" = it mounts the synced folders
    # that its kernel command line names (KVM machines; providers/virtiofs.py)
    features: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)  # "name=version" of every package in it, sorted
    # where it came from when it was not built here: {"catalog", "version", "sha256"} or {"url"}
    source: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    built: str = ""
    build_seconds: float | None = None
    recipe: str = ""
    recipe_digest: str = ""
    suite: str = ""
    mirror: str = ""
    kernel_version: str = ""
    artefacts: dict[str, str] = field(default_factory=lambda: dict(ARTEFACTS))
    extra: dict[str, Any] = field(default_factory=dict)  # keys this vbox does not know

    @classmethod
    def from_dict(cls, data: dict) -> "BoxMeta":
        known = {f.name for f in fields(cls)} - {"boot", "extra"}
        values = {k: v for k, v in data.items() if k in known}
        boot = data.get("boot")
        if isinstance(boot, dict):
            values["boot"] = Boot(**{k: v for k, v in boot.items() if k in {f.name for f in fields(Boot)}})
        elif "root_label" in data:  # boxes of earlier vbox versions kept it at the top
            values["boot"] = Boot(root_label=data["root_label"])
        extra = {k: v for k, v in data.items() if k not in known and k not in ("boot", "root_label")}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}
