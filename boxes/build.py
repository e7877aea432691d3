"""Building a box from a recipe: debootstrap, configure, then the disk, kernel and initrd.

The build happens in a staging folder of the store and is moved into place only when
complete; an interrupted or failed build leaves nothing in the store.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import time
from pathlib import Path

from boxes.guestfiles import FILES, LIBVIRT_HOST_FILES, LIBVIRT_HOST_SERVICES, MASKED, ROOT_LABEL, SERVICES
from boxes.meta import Boot, BoxMeta
from boxes.reproducible import normalize, reset_dev, set_times
from boxes.recipe import Recipe
from boxes.store import ARTEFACTS, Box, BoxStore, discard
from vbox_cli import proc
from vbox_cli.errors import CommandError, VboxError
from vbox_cli.events import Phase

REQUIRED_TOOLS = ("debootstrap", "mke2fs", "debugfs", "qemu-img", "chroot")


class DebootstrapProgress:
    """debootstrap's output, read as it comes: each line to the report's output, and what
    it is doing as the phase's detail: packages fetched (or checked, from the cache), then
    unpacked and configured of that many. At most one phase event per 10 packages."""

    STAGES = {"Retrieving": "fetched", "Validating": "fetched", "Extracting": "extracted",
              "Unpacking": "unpacked", "Configuring": "configured"}
    LABELS = {"fetched": "packages fetched: {count}", "extracted": "extracting {count} of {total}",
              "unpacked": "unpacking {count} of {total}", "configured": "configuring {count} of {total}"}

    def __init__(self, report, first: str):
        self.report = report
        self.counts = {"fetched": 0, "extracted": 0, "unpacked": 0, "configured": 0}
        self.shown = ""
        self.first = first

    def __call__(self, line: str) -> None:
        self.report.detail(line)
        words = line.split()
        if len(words) < 3 or words[0] != "I:" or words[1] not in self.STAGES:
            return
        stage = self.STAGES[words[1]]
        if words[1] == "Retrieving" and words[2].startswith(("Release", "InRelease", "Packages")):
            return  # the index files, not packages
        if words[1] == "Validating" and words[2].startswith(("Packages", "Release")):
            return
        self.counts[stage] += 1
        count, total = self.counts[stage], self.counts["fetched"]
        detail = self.LABELS[stage].format(count=count, total=total)
        if count % 10 == 0 or stage != self.shown or (stage != "fetched" and count == total):
            self.shown = stage
            self.report.phase(Phase.BOOTSTRAPPING, f"{self.first}: {detail}")


class Reporter:
    """A build's progress as events of the command's stream, about the box."""

    def __init__(self, events=None, subject: str = ""):
        from vbox_cli.events import EventStream

        self.events = events or EventStream()
        self.subject = subject

    def phase(self, phase, detail: str = "") -> None:
        self.events.phase(self.subject, phase, detail)

    def detail(self, line: str) -> None:
        self.events.output(self.subject, line)

    def warning(self, text: str) -> None:
        self.events.warning(f"{self.subject}: {text}", self.subject)


def build(
    recipe: Recipe,
    store: BoxStore,
    report: Reporter | None = None,
    force: bool = False,
    mirror: str | None = None,
    cache_dir: Path | None = None,
    pinned: list[str] | None = None,
) -> tuple[Box, bool]:
    """Build the box of `recipe` into `store`. Returns (box, built): built is False when the
    store already had this recipe's box (nothing was done). `pinned`: name=version of the
    packages an earlier build had (its box.json): those versions are installed where the
    mirror has them, and the report says which it has not."""
    report = report or Reporter(subject=recipe.name)
    with store.lock(recipe.name, on_wait=lambda: report.phase(Phase.WAITING, "another build of this box")):
        current = store.find(recipe.name, recipe.version)
        if current and current.meta.recipe_digest == recipe.digest and not force and not pinned:
            return current, False
        if current and store.users(recipe.name):
            # Never replace a box under machines: LXC machines have its root tree as their lower layer.
            raise VboxError(
                f"box {recipe.name} {recipe.version} is in use and its recipe changed",
                hint="bump the recipe's version to build a new box beside it, or destroy those machines first",
            )
        check_host(store.root)
        staged = store.staging(recipe.name)
        try:
            meta = _build_into(staged, recipe, report, mirror or recipe.mirror, cache_dir, pinned)
            report.phase(Phase.INSTALLING, "moving the box into the store")
            return store.install(staged, recipe.name, recipe.version, meta), True
        finally:
            discard(staged)


BUILD_SPACE = 2 * 1024**3  # what a build of debian-12 takes at its largest: the tree, the raw image, the qcow2


def check_host(store_root: Path | None = None) -> None:
    if os.geteuid() != 0:  # `env box build` runs a user's build in her user namespace (boxes/userns.py)
        raise VboxError("building a box needs root (debootstrap, chroot), or a user namespace of your own",
                        hint="`env box build NAME` builds it in one")
    if store_root is not None:
        where = store_root
        while not where.exists():
            where = where.parent
        free = shutil.disk_usage(where).free
        if free < BUILD_SPACE:
            raise VboxError(f"not enough space for a box build in {store_root}: {free >> 20} MiB free",
                            hint=f"a build takes up to {BUILD_SPACE >> 30} GiB while it runs; free some space there")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise VboxError(f"missing tools for a box build: {', '.join(missing)}", hint="run `env doctor --fix`")


def _build_into(staged: Path, recipe: Recipe, report: Reporter, mirror: str, cache_dir: Path | None,
                pinned: list[str] | None = None) -> BoxMeta:
    started = time.monotonic()
    rootfs = staged / ARTEFACTS["rootfs"]
    _debootstrap(rootfs, recipe, report, mirror, cache_dir)
    if pinned:
        _pin(rootfs, recipe, report, pinned)
    report.phase(Phase.CONFIGURING, "the root tree")
    _configure(rootfs, recipe)
    packages = _packages(rootfs)
    reset_dev(rootfs)
    normalize(rootfs, recipe.epoch)
    report.phase(Phase.KERNEL, "extracting the kernel and initrd")
    kernel, initrd = _kernel_files(rootfs)
    shutil.copy2(kernel, staged / ARTEFACTS["kernel"])
    if recipe.initrd == "small":
        from boxes import initrd as small_initrd

        (staged / ARTEFACTS["initrd"]).write_bytes(small_initrd.make(rootfs, kernel.name.removeprefix("vmlinuz-")))
    else:
        shutil.copy2(initrd, staged / ARTEFACTS["initrd"])
    if recipe.hypervisor:
        _extract_hypervisor(rootfs, staged / ARTEFACTS["hypervisor"])
    report.phase(Phase.DISK, "making the disk image")
    _make_disk(rootfs, staged / ARTEFACTS["disk"], recipe)
    report.phase(Phase.DIGEST, "computing the digest")
    digest = _digest(staged)
    from boxes import userns

    if userns.inside():  # a user's build: her LXC machines' view of the tree
        userns.hand_over(rootfs)
    return BoxMeta(
        name=recipe.name, version=recipe.version, description=recipe.description, digest=f"sha256:{digest}",
        recipe_digest=recipe.digest, recipe=recipe.source, suite=recipe.suite, mirror=mirror, user=recipe.user,
        boot=Boot(root_label=ROOT_LABEL, hypervisor="hypervisor" if recipe.hypervisor else None),
        kernel_version=kernel.name.removeprefix("vmlinuz-"),
        features=["virtiofs", "static-addresses", "identity-channel", "static-resolver",
                  *(["libvirt-host"] if recipe.libvirt_host else [])],
        packages=packages,
        built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.monotonic() - started, 1), size=_tree_size(staged),
    )


def _debootstrap(rootfs: Path, recipe: Recipe, report: Reporter, mirror: str, cache_dir: Path | None) -> None:
    first = f"debootstrap {recipe.suite} from {mirror}"
    report.phase(Phase.BOOTSTRAPPING, first)
    argv = ["debootstrap", f"--variant={recipe.variant}", f"--components={','.join(recipe.components)}"]
    if recipe.packages:
        argv.append(f"--include={','.join(recipe.packages)}")
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        argv.append(f"--cache-dir={cache_dir}")
    argv += [recipe.suite, str(rootfs), mirror]
    try:
        proc.stream(argv, DebootstrapProgress(report, f"debootstrap {recipe.suite}"), env=_build_env(recipe))
    except CommandError as exc:
        free = shutil.disk_usage(rootfs).free
        if free < 64 * 1024**2:  # debootstrap says "file already exists" or worse when the disk is full
            raise VboxError(f"debootstrap failed: the disk of the box store is full ({free >> 20} MiB free)",
                            hint=f"a box build needs about {BUILD_SPACE >> 30} GiB free there; free some space and "
                                 "build again") from None
        log = rootfs / "debootstrap" / "debootstrap.log"
        reason = _debootstrap_reason(exc.output, log)
        raise VboxError(
            f"debootstrap failed (exit status {exc.returncode}): {reason}",
            hint="check the suite, the package names and the mirror in the recipe " + recipe.source,
        ) from None


def _debootstrap_reason(output: str, log: Path) -> str:
    lines = [line for line in output.splitlines() if line.startswith("E:") or "Couldn't" in line]
    if not lines and log.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()[-3:]
    if not lines:
        lines = output.strip().splitlines()[-3:]
    return " / ".join(line.strip() for line in lines) or "no output"


def _build_env(recipe: Recipe) -> dict[str, str]:
    """What every program of the build sees: its clock for what it stamps (mkinitramfs,
    man-db, ...), no questions, one locale; and what of the caller's environment would
    change the tree set one way (PYTHONDONTWRITEBYTECODE: a Python program of the build,
    py3compile itself, would otherwise leave timestamped .pyc files that py3compile then
    keeps, instead of the ones it makes from SOURCE_DATE_EPOCH)."""
    return {"SOURCE_DATE_EPOCH": str(recipe.epoch), **STEADY_ENV}


STEADY_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}


def _chroot(rootfs: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    return proc.run(["chroot", str(rootfs), *argv], env=env or STEADY_ENV).stdout


def _configure(rootfs: Path, recipe: Recipe) -> None:
    files = {**FILES, **(LIBVIRT_HOST_FILES if recipe.libvirt_host else {})}
    for relative, (content, mode) in files.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        os.chmod(target, mode)
    user = recipe.user
    _chroot(rootfs, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", ",".join(recipe.groups), user)
    sudoers = rootfs / "etc/sudoers.d" / user
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(sudoers, 0o440)
    ssh_dir = rootfs / "home" / user / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").touch(mode=0o600)
    uid_gid = (rootfs / "etc/passwd").read_text().split(f"\n{user}:", 1)[1].split(":")[1:3]
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, int(uid_gid[0]), int(uid_gid[1]))
    _chroot(rootfs, "passwd", "--lock", "root")
    _chroot(rootfs, "systemctl", "enable", *SERVICES, *(LIBVIRT_HOST_SERVICES if recipe.libvirt_host else ()))
    _chroot(rootfs, "systemctl", "mask", *MASKED)
    # Machines get their own identity: no machine-id, no SSH host keys in the box.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in glob.glob(str(rootfs / "etc/ssh/ssh_host_*")):
        os.unlink(key)
    # Smaller box: no package cache, no package lists, no debootstrap leftovers.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_Packages",
                    "var/lib/apt/lists/*_InRelease", "var/lib/apt/lists/*_Release*", "var/log/*.log"):
        for path in glob.glob(str(rootfs / pattern)):
            os.unlink(path)
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)


def _pin(rootfs: Path, recipe: Recipe, report: Reporter, pinned: list[str]) -> None:
    """Install the versions of `pinned` that differ from what debootstrap installed, where
    the mirror still has them (each one tried alone when they do not go in together); say
    which it cannot get, and which packages are new."""
    wanted = dict(item.split("=", 1) for item in pinned if "=" in item)
    have = dict(item.split("=", 1) for item in _packages(rootfs))
    todo = [f"{name}={version}" for name, version in sorted(wanted.items()) if have.get(name) != version]
    report.phase(Phase.CONFIGURING, f"{len(wanted) - len(todo)} of {len(wanted)} package versions as pinned; "
                                    f"{len(todo)} to install")
    env = _build_env(recipe)
    missing = []
    marks = rootfs / "var/lib/apt/extended_states"  # apt marks what it installs as wanted by hand
    saved = marks.read_bytes() if marks.is_file() else None
    if todo:
        proc.run(["chroot", str(rootfs), "apt-get", "update", "-q"], env=env, timeout=600)
        install = ["chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--allow-downgrades",
                   "--no-install-recommends"]
        if proc.run([*install, *todo], env=env, check=False, timeout=1800).returncode != 0:
            for item in todo:
                if proc.run([*install, item], env=env, check=False, timeout=1800).returncode != 0:
                    missing.append(item)
        if saved is None:
            marks.unlink(missing_ok=True)
        else:
            marks.write_bytes(saved)
    extra = sorted(set(have) - set(wanted))
    now = _packages_map(rootfs)
    for item in missing:
        name = item.split("=", 1)[0]
        report.warning(f"the mirror does not have {item}: the box has {name}={now.get(name, '(none)')}")
    if extra:
        report.warning(f"packages the earlier build did not have: {', '.join(extra)}")
    if missing or extra:
        report.warning("the digest will differ from the earlier build's")


def _packages_map(rootfs: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in _packages(rootfs))


def _packages(rootfs: Path) -> list[str]:
    """Every package of the box as name=version (architecture-qualified where dpkg does)."""
    out = _chroot(rootfs, "dpkg-query", "-W", "-f", "${binary:Package}=${Version}\\n")
    return sorted(line for line in out.splitlines() if line.strip())


def _kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if not kernels:
        raise VboxError("the box has no kernel in /boot", hint="add a linux-image package to the recipe")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.is_file():
        raise VboxError(f"the box has no initrd for {kernel.name}", hint="add initramfs-tools to the recipe")
    return kernel, initrd


def _extract_hypervisor(rootfs: Path, target: Path) -> None:
    """Xen's image, unpacked: QEMU's multiboot loader does not read gzip."""
    import gzip

    images = sorted(rootfs.glob("boot/xen-*.gz"))
    if not images:
        raise VboxError("the recipe asks for a hypervisor but the box has no /boot/xen-*.gz",
                        hint="add xen-system-amd64 to the recipe's packages")
    with gzip.open(images[-1]) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)


def disk_mib(rootfs_bytes: int, disk_size: str) -> int:
    """The box disk's size: "auto" is the root tree, a quarter more for the file system's own
    needs (inodes, journal, reserved blocks) and 256 MiB of room, in whole 256 MiB."""
    from vbox_cli.envfile.types import parse_size

    if disk_size != "auto":
        return parse_size(disk_size) // 1024**2
    need = rootfs_bytes * 5 // 4 // 1024**2 + 256
    return -(-need // 256) * 256


def _make_disk(rootfs: Path, disk: Path, recipe: Recipe) -> None:
    """An ext4 image of the tree, the same bytes from the same tree: its UUID and hash seed
    come from the recipe, its own times from the recipe's date (E2FSPROGS_FAKE_TIME), and
    the times mke2fs copies that the tree cannot keep still (each file's ctime, and its
    atime, which reading it to copy it moves) are set to that date afterwards with debugfs.
    mke2fs 1.47 adds a folder's entries in name order."""
    import uuid

    raw = disk.with_suffix(".raw")
    size_mib = disk_mib(_tree_size(rootfs), recipe.disk_size)
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://vbox.dev/box/{recipe.name}/{recipe.version}"))
    env = {"E2FSPROGS_FAKE_TIME": str(recipe.epoch)}
    # Inode tables zeroed now (they stay sparse in the qcow2), or every machine's kernel
    # zeroes them at first boot: 32 MB of writes per 2 GB into its overlay.
    proc.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", fs_uuid,
              "-E", f"lazy_itable_init=0,lazy_journal_init=0,hash_seed={fs_uuid}",
              "-d", str(rootfs), str(raw), f"{size_mib}M"], env=env)
    try:
        set_times(rootfs, raw, recipe.epoch, env)
        proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)])
    finally:
        raw.unlink(missing_ok=True)


def _digest(staged: Path) -> str:
    """sha256 over the disk, kernel and initrd (the root tree is the disk's content)."""
    total = hashlib.sha256()
    for kind in ("disk", "kernel", "initrd"):
        part = hashlib.sha256()
        with open(staged / ARTEFACTS[kind], "rb") as f:
            while chunk := f.read(4 * 1024 * 1024):
                part.update(chunk)
        total.update(f"{ARTEFACTS[kind]} {part.hexdigest()}\n".encode())
    return total.hexdigest()


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total
