"""An LXC machine moved cold between this host's LXC and another host's libvirt LXC
driver (`env migrate`): its whole root tree as one ext4 image, the libvirt volume its
domain there boots from.

Out: the box's tree with the machine's own layer over it (an overlay mounted read-only
apart from a scratch layer of its own, where the network file of the other host is
written), made into an image by mke2fs -d (owners, modes, links, xattrs and times kept)
and sent up as a sparse volume: only the blocks that hold data cross the link.

Back: the image fetched (sparse again) and read through fuse2fs: the other host (a
machine of the Envfile, whose root may have changed the image) is not trusted, so its
file system is parsed by a program, never by this host's kernel. rsync makes a new
machine's overlay on the box's tree hold the same files, so that its own layer holds only
what differs from the box. Files are compared as rsync does by default, by size and time
(to the second): a file the machine changed, then gave back the size and the time of the
box's, would come back as the box's. Comparing contents (--checksum) would set the times
of every file of the box, each then copied up into the machine's layer.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from providers.lxc_layer import plain_folder, unmask_unit
from vbox_cli import proc
from vbox_cli.errors import VboxError

MIB = 1024**2
IMAGE_SUFFIX = ".rootfs"  # the volume of a moved machine's root tree: <object name>.rootfs
STAGING = "moving"  # in the machine's folder while an image is made or unpacked


def volume_name(object_name: str) -> str:
    return f"{object_name}{IMAGE_SUFFIX}"


@contextmanager
def _mounted(argv: list[str], point: Path):
    point.mkdir(parents=True, exist_ok=True)
    proc.run([*argv, str(point)], timeout=120)
    try:
        yield point
    finally:
        proc.run(["umount", str(point)], check=False, timeout=120)


def write_inside(root: Path, relative: str, content: str) -> None:
    """A file written into a machine's tree mounted at `root` (a root:root 0644 file),
    through none of the machine's links: a link it made in the way (to a file of this
    host) is refused, never followed."""
    current = root
    for part in Path(relative).parent.parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise VboxError(f"the machine's {current.relative_to(root)} is not a folder: vbox does not write "
                            f"its {relative} through it")
        if not current.exists():
            current.mkdir(mode=0o755)
    target = root / relative
    if target.is_dir() and not target.is_symlink():
        raise VboxError(f"the machine's {relative} is a folder: vbox does not replace it")
    if target.is_symlink() or target.exists():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(content)


# A container boots no kernel: the box's kernel and modules (a third of debian-12's tree,
# there for its KVM machines) stay behind, empty folders in the image, unless the machine
# changed something in them; on the way back the box's are kept if they are still empty.
KERNEL_FOLDERS = ("boot", "usr/lib/modules")


def left_behind(upper: Path, lower: Path, root: Path) -> list[str]:
    """The box's kernel folders that the machine's layer does not touch: plain folders in
    the box and in the machine's tree mounted at `root` (then no folder of its layer on the
    way is a link either), with nothing of the machine's in them."""
    return [f for f in KERNEL_FOLDERS
            if plain_folder(lower, f) and plain_folder(root, f) and not os.path.lexists(upper / f)]


def make_image(upper: Path, lower: Path, staging: Path, files: dict[str, str], minimum: int = 0,
               unmask: tuple[str, ...] = ()) -> Path:
    """The merged tree of a stopped machine (its layer `upper` over the box's `lower`) as
    an ext4 image in `staging`, with `files` (relative path -> content) written over it,
    the systemd units `unmask` unmasked, and the box's kernel folders empty (`left_behind`).
    Its size: what the tree holds and half as much again free (at least 1 GiB free), or
    `minimum` (the machine's `disk`), whichever is more; sparse."""
    scratch, work, root, empty = staging / "scratch", staging / "work", staging / "root", staging / "empty"
    for folder in (scratch, work, empty):
        folder.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={upper}:{lower},upperdir={scratch},workdir={work}"
    with ExitStack() as mounts:
        mounts.enter_context(_mounted(["mount", "-t", "overlay", "overlay", "-o", options], root))
        for relative, content in files.items():
            write_inside(root, relative, content)
        for unit in unmask:
            unmask_unit(root, unit)
        for i, folder in enumerate(left_behind(upper, lower, root)):  # an empty folder over it, as it is
            st, stand_in = (root / folder).stat(), empty / str(i)
            stand_in.mkdir()
            os.chown(stand_in, st.st_uid, st.st_gid)
            os.chmod(stand_in, st.st_mode & 0o7777)
            os.utime(stand_in, ns=(st.st_atime_ns, st.st_mtime_ns))  # its time too: rsync leaves it alone later
            mounts.enter_context(_mounted(["mount", "--bind", "-o", "ro", str(stand_in)], root / folder))
        used = int(proc.run(["du", "-sx", "--block-size=1", str(root)], timeout=600).stdout.split()[0])
        size = max(minimum, used + max(used // 2, 1024 * MIB))
        size = -(-size // MIB) * MIB
        image = staging / "root.img"
        with open(image, "wb") as f:
            f.truncate(size)
        proc.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "vbox-root", "-E", "root_owner=0:0",
                  "-d", str(root), str(image)], timeout=1800)
    with open(image, "r+b") as f:  # its last byte written: a sparse copy ends there, not at its last data
        f.seek(size - 1)
        f.write(b"\0")
    return image


def unpack_image(image: Path, staging: Path, upper: Path, lower: Path, work: Path) -> None:
    """The files of `image` made the machine's: its overlay (`upper`, empty, over the box's
    `lower`) mounted in `staging`, and made to hold the image's tree by rsync."""
    source, merged = staging / "image", staging / "merged"
    work.mkdir(parents=True, exist_ok=True)
    with _mounted(["fuse2fs", "-o", "ro", str(image)], source), \
            _mounted(["mount", "-t", "overlay", "overlay", "-o",
                      f"lowerdir={lower},upperdir={upper},workdir={work}"], merged):
        # the box's kernel folders, left behind empty and still empty: the box's are kept
        kept = [f"--exclude=/{folder}/*" for folder in KERNEL_FOLDERS
                if plain_folder(lower, folder) and plain_folder(source, folder)
                and not any((source / folder).iterdir())]
        # -H links, -A ACLs, -X xattrs (file capabilities), numeric ids: the machine's, not
        # this host's names; --delete: what the machine removed goes (a whiteout above the box);
        # --modify-window=1: mke2fs -d keeps whole seconds of a time only, and a time set on a
        # file of the box would copy it up into the machine's layer (so would --checksum: it
        # sets the times of every file it finds the same)
        result = subprocess.run(["rsync", "-aHAX", "--numeric-ids", "--delete", "--modify-window=1", *kept,
                                 f"{source}/", f"{merged}/"],
                                capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise VboxError(f"could not copy the machine's files back: rsync exited {result.returncode}",
                            details=result.stderr[-2000:] or None)
    proc.run(["rm", "-rf", "--one-file-system", str(work)], timeout=600)


# -- the machine leaving this host, and coming back ---------------------------------------
def move_out(provider, spec, target, target_spec, progress=None):
    """This host's LXC machine `spec` (an LxcProvider's) moved cold to `target` (an
    LxcGuestProvider), on its network of `target_spec`: stopped, made an image, sent,
    defined there; removed here once it is. The caller starts it there."""
    from providers import lxc_layer as layer
    from providers.base import RUNNING
    from providers.lxc_config import NETWORKD_UNITS, UPPER, address_files, machine_ids, user_map_lines
    from providers.migration import Migration

    began = time.monotonic()
    obj, name = spec.object_name, spec.machine.name
    folder = provider.folder(obj)
    if machine_ids(folder) or user_map_lines(folder):
        raise VboxError(f"{name} is unprivileged: its files belong to ids of this host's range, which another "
                        "host does not map: nothing was moved")
    running = provider.state(obj) == RUNNING
    if running and not provider.halt(obj, 60):
        raise VboxError(f"{name} did not shut down in 60 s: nothing was moved", hint=f"`env halt {name}` first")
    layer.mount_disk(folder)
    layer.settle(folder)
    staging = folder / STAGING
    layer.discard(staging)
    try:
        files = address_files(target_spec.address, target_spec.gateway, target_spec.domain,
                              bool(spec.box.meta.recipe))
        # libvirt's LXC driver sets no address: networkd does there (lxc_config.NETWORKD_UNITS)
        image = make_image(folder / UPPER, spec.box.artefact("rootfs"), staging, files,
                           spec.machine.disk if spec.machine.disk_set else 0, unmask=NETWORKD_UNITS)
        copied = target.receive_image(target_spec, image, progress)
    except BaseException:
        layer.discard(staging)
        if running:  # left as it was
            provider.start(spec)
        raise
    layer.discard(staging)
    provider.destroy(obj)
    return Migration("cold", time.monotonic() - began, copied=copied)


def move_in(provider, spec, fetch) -> int:
    """A machine coming back to this host's LXC (an LxcProvider's) from another host: a new
    machine folder whose own layer is made to hold the files of its image (`fetch(path)`
    writes the image there, returns the bytes it received). Its config is written last: a
    folder with a config is a complete machine."""
    from providers import lxc_layer as layer
    from providers.lxc_config import UPPER, address_files

    obj = spec.object_name
    folder = provider.folder(obj)
    if folder.exists():  # what a move cut short left
        provider.destroy(obj)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o700)
    if spec.machine.disk_set:
        layer.make_disk(folder, spec.machine.disk)
    upper = folder / UPPER
    upper.mkdir(parents=True)
    lower = spec.box.artefact("rootfs")
    staging = folder / STAGING
    staging.mkdir()
    try:
        image = staging / "root.img"
        received = fetch(image)
        unpack_image(image, staging, upper, lower, upper.with_name("moving-work"))
    finally:
        layer.discard(staging)
    files = address_files(spec.address, spec.gateway, spec.domain, bool(spec.box.meta.recipe))
    layer.write_files(upper, lower, {path: (content, 0o644, "root") for path, content in files.items()}, None,
                      lambda owner: (0, 0))
    if spec.network and not spec.box.meta.recipe:  # as at its creation (LxcProvider.create)
        from providers.network import add_dhcp_host

        from providers.lxc_config import mac_address

        add_dhcp_host(provider.network_host.conn, spec.network, mac_address(obj), spec.address,
                      spec.machine.hostname.split(".")[0])
    provider.apply_resources(spec)  # its config, last
    return received


# -- sparse streams: the blocks that hold data, and the length of each hole ---------------
def upload_sparse(conn, vol, image: Path, progress=None) -> int:
    """`image` into the volume `vol` (as big), holes sent as holes. Returns the bytes of
    data sent."""
    import libvirt

    from providers.storage import streaming

    size = image.stat().st_size
    sent = 0
    fd = os.open(image, os.O_RDONLY)

    def read(_stream, nbytes, _opaque):
        nonlocal sent
        data = os.read(fd, nbytes)
        sent += len(data)
        if progress is not None:
            progress(os.lseek(fd, 0, os.SEEK_CUR), size)
        return data

    def hole(_stream, _opaque):
        here = os.lseek(fd, 0, os.SEEK_CUR)
        if here >= size:
            return [False, 0]
        try:
            data = os.lseek(fd, here, os.SEEK_DATA)  # (both seeks move the offset: it is put back)
            end = os.lseek(fd, here, os.SEEK_HOLE) if data == here else data
        except OSError:  # ENXIO: nothing but a hole from here to the end
            data, end = size, size
        os.lseek(fd, here, os.SEEK_SET)
        return [True, end - here] if data == here else [False, data - here]

    def skip(_stream, length, _opaque):
        os.lseek(fd, length, os.SEEK_CUR)
        return 0

    try:
        with streaming(conn) as stream:
            vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            stream.sparseSendAll(read, hole, skip, None)
    finally:
        os.close(fd)
    return sent


def download_sparse(conn, vol, image: Path, progress=None) -> int:
    """The volume `vol` into the new file `image`, its holes left holes. Returns the bytes
    of data received."""
    import libvirt

    from providers.storage import streaming

    size = vol.info()[1]
    received = 0
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(_stream, data, _opaque):
        nonlocal received
        received += len(data)
        if progress is not None:
            progress(os.lseek(fd, 0, os.SEEK_CUR) + len(data), size)
        return os.write(fd, data)

    def hole(_stream, length, _opaque):
        os.lseek(fd, length, os.SEEK_CUR)
        return 0

    try:
        with streaming(conn) as stream:
            vol.download(stream, 0, size, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
            stream.sparseRecvAll(write, hole, None)
        os.ftruncate(fd, size)  # a hole at the end has no byte after it
    finally:
        os.close(fd)
    return received
