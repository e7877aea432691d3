"""Box recipes: data files that say how a box is built."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from vbox_cli.errors import UsageError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
# Bump when the builder's output changes, so cached boxes are rebuilt.
BUILDER_VERSION = "12"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a box name: use a-z, 0-9, '.', '_' and '-'")
    return value


def _packages(value: list[str]) -> list[str]:
    for package in value:
        if not _PACKAGE.match(package):
            raise ValueError(f"{package!r} is not a Debian package name")
    return value


def _size(value: str) -> str:
    from vbox_cli.envfile.types import parse_size

    if value != "auto":
        parse_size(value)
    return value


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, AfterValidator(_name)]
    version: Annotated[str, AfterValidator(_name)]
    description: str = ""
    suite: Annotated[str, AfterValidator(_name)]
    mirror: str = Field(pattern=r"^(https?|file)://\S+$")
    variant: str = Field("minbase", pattern=r"^(minbase|buildd|fakechroot|-)$")
    components: list[Annotated[str, AfterValidator(_name)]] = ["main"]
    packages: Annotated[list[str], AfterValidator(_packages)] = []
    user: str = Field("vbox", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    groups: list[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]] = ["sudo"]  # the user's groups
    # the box's disk: "auto" is as small as its root tree allows (machines grow it to their
    # own `disk` at first boot), or a size
    disk_size: Annotated[str, AfterValidator(_size)] = "auto"
    hypervisor: bool = False  # Xen: the box also carries the hypervisor's multiboot image
    # a libvirt host that may run as an LXC machine: /dev/net/tun made at boot (LXC lets a
    # container use it but makes no node), and QEMU started without cgroups of its own
    libvirt_host: bool = False
    # the initrd a direct kernel boot gets: "debian" (initramfs-tools', from /boot) or "small"
    # (boxes/initrd.py: the root disk's modules and a static busybox, which the recipe's
    # packages must include as busybox-static; 3 s less of every boot under TCG here)
    initrd: str = Field("debian", pattern=r"^(debian|small)$")
    # the box's clock (SOURCE_DATE_EPOCH): no file of the box is newer, and every time the
    # builder writes is this one, so the same packages give the same box on any machine
    date: str = Field("2024-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")

    @property
    def epoch(self) -> int:
        import calendar
        import time

        return calendar.timegm(time.strptime(self.date, "%Y-%m-%d"))

    # set by load(), not by the file
    source: str = ""
    digest: str = ""


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load(name_or_path: str) -> Recipe:
    """A recipe by box name (from boxes/recipes/) or by the path of a recipe file."""
    import tomllib

    path = Path(name_or_path)
    if not (name_or_path.endswith(".toml") or "/" in name_or_path):
        path = RECIPES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise UsageError(
                f"no box recipe named {name_or_path!r}",
                hint="known recipes: " + ", ".join(available()) + "; or pass the path of a recipe file",
            )
    try:
        data = path.read_bytes()
        document = tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read recipe {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not a valid TOML recipe: {exc}") from None
    digest = hashlib.sha256(data + f"\nbuilder={BUILDER_VERSION}".encode()).hexdigest()
    try:
        return Recipe.model_validate({**document, "source": str(path), "digest": digest})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise UsageError(f"{path}: {problems}") from None
