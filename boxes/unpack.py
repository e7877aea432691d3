"""Unpacking tar streams that nothing vouches for, into a staging folder of the box
store: the checks every import shares (vbox archives, Vagrant boxes, OCI images, cloud
images). A member is written only under a name checked to stay in the staging folder and
not to pass through a link; sizes, member counts, header sizes and the compression ratio
are bounded; device nodes come from vbox's own table; a refusal names the file and says
that nothing was written."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from boxes.meta import ARTEFACTS
from boxes.tree import CHUNK, XATTRS
from vbox_cli.errors import VboxError

ROOTFS = ARTEFACTS["rootfs"]
XATTR_KEY = "VBOX.xattr."  # PAX record: base64 of the value
DEVICES = {  # the only device nodes a box's /dev may have: name -> (kind, major, minor, mode)
    "null": ("c", 1, 3, 0o666), "zero": ("c", 1, 5, 0o666), "full": ("c", 1, 7, 0o666),
    "random": ("c", 1, 8, 0o666), "urandom": ("c", 1, 9, 0o666), "tty": ("c", 5, 0, 0o666),
    "console": ("c", 5, 1, 0o666), "ptmx": ("c", 5, 2, 0o666),
}
MAX_HEADER = 1024 * 1024  # a PAX or GNU long-name header
MAX_MEMBERS = 2_000_000
MAX_SIZE = 64 * 1024**3  # more than any box; a manifest may declare less, never more
MAX_RATIO = 200  # bytes out per compressed byte in: a box gives about 3, a bomb of zeros thousands

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class ArchiveError(VboxError):
    """The archive is not a box vbox may import; nothing was written."""


# -- export --------------------------------------------------------------------------


class _Member(tarfile.TarInfo):
    """A member whose long headers are bounded: tarfile reads them whole into memory."""

    def _proc_pax(self, tar):
        if self.size > MAX_HEADER:
            raise ArchiveError(f"a PAX header of {self.size} bytes (a hostile archive)")
        return super()._proc_pax(tar)

    def _proc_gnulong(self, tar):
        if self.size > MAX_HEADER:
            raise ArchiveError(f"a long-name header of {self.size} bytes (a hostile archive)")
        return super()._proc_gnulong(tar)


class _Extractor:
    """Writes checked members into `staging`; every refusal is an ArchiveError."""

    def __init__(self, staging: Path, manifest: dict, progress: Progress | None, compressed: Callable[[], int]):
        self.staging = staging
        self.compressed = compressed  # bytes of the file read so far
        self.budget = manifest["size"]
        self.written = 0
        self.members = 0
        self.names: set[str] = set()
        self.dirs: set[str] = {""}
        self.files: set[str] = set()
        self.expected_files = set(manifest["files"])
        self.dir_attrs: list[tuple[str, tarfile.TarInfo]] = []
        self.progress = progress
        self.limit = f"the {self.budget} bytes its manifest declares"

    def _name(self, member: tarfile.TarInfo) -> str:
        name = member.name
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
            raise ArchiveError(f"a member's name leaves the box: {name!r}")
        if name in self.names:
            raise ArchiveError(f"a member comes twice: {name!r}")
        top = parts[0]
        if len(parts) == 1 and top in self.expected_files:
            if not member.isreg():
                raise ArchiveError(f"{name} is not a regular file")
            return name
        if top != ROOTFS:
            raise ArchiveError(f"a member vbox does not know: {name!r}")
        parent = "/".join(parts[:-1])
        if parent not in self.dirs:
            raise ArchiveError(f"{name!r} is not inside a folder of the archive (a link on its way, or no folder)")
        return name

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} members")
        name = self._name(member)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise ArchiveError(f"{name!r} is a device, FIFO or other special file; a box has none")
        if member.issparse():
            raise ArchiveError(f"{name!r} is a sparse member; vbox's archives have none")
        for key in member.pax_headers:
            if key.startswith(XATTR_KEY):
                attr = key[len(XATTR_KEY):]
                if attr not in XATTRS and not attr.startswith("user."):
                    raise ArchiveError(f"{name!r} carries the attribute {attr!r}, which a box may not have")
        target = self.staging / name
        if member.isdir():
            target.mkdir(mode=0o700)
            self.dirs.add(name)
            self.dir_attrs.append((name, member))
        elif member.issym():
            os.symlink(member.linkname, target)
            os.lchown(target, member.uid, member.gid)
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
        elif member.islnk():
            if member.linkname not in self.files or not member.linkname.startswith(ROOTFS + "/"):
                raise ArchiveError(f"{name!r} is a hard link to {member.linkname!r}, which is not a file of the tree")
            os.link(self.staging / member.linkname, target, follow_symlinks=False)
        else:
            self.write(tar, member, target)
            self.files.add(name)
        self.names.add(name)
        if not member.isdir() and not member.islnk():  # a hard link's file has its attributes already
            self._attrs(target, member, symlink=member.issym())

    def write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        """A regular member's bytes into a new file, within the budget and the ratio."""
        if self.written + member.size > self.budget:
            raise ArchiveError(f"{member.name!r} would take it past {self.limit} (a damaged or hostile archive)")
        source = tar.extractfile(member)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            left = member.size
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise ArchiveError(f"the archive ends inside {member.name!r} (truncated)")
                out.write(chunk)
                left -= len(chunk)
                self.written += len(chunk)
                if self.written > MAX_RATIO * self.compressed() + 64 * CHUNK:
                    raise ArchiveError(f"{member.name!r} unpacks to far more than its compressed size "
                                       "(an archive bomb)")
                if self.progress and self.written % (64 * CHUNK) < len(chunk):
                    self.progress(self.written, self.budget)

    def _attrs(self, target: Path, member: tarfile.TarInfo, symlink: bool = False) -> None:
        if symlink:
            return
        os.chown(target, member.uid, member.gid, follow_symlinks=False)
        os.chmod(target, stat.S_IMODE(member.mode), follow_symlinks=False)  # after chown: it clears setuid
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_KEY):
                os.setxattr(target, key[len(XATTR_KEY):], base64.b64decode(value), follow_symlinks=False)
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

    def finish(self, devices: list[str]) -> None:
        """Folders' own attributes (once their contents are written), and /dev's nodes."""
        dev = self.staging / ROOTFS / "dev"
        if devices and f"{ROOTFS}/dev" in self.dirs:
            for name in devices:
                kind, major, minor, mode = DEVICES[name]
                os.mknod(dev / name, mode | stat.S_IFCHR, os.makedev(major, minor))
                os.chmod(dev / name, mode)
        for name, member in reversed(self.dir_attrs):
            self._attrs(self.staging / name, member)
        if self.progress:
            self.progress(self.written, self.budget)


NOTHING_WRITTEN = "nothing was written to the box store"


@contextmanager
def refusals(path: Path, store, damaged: tuple[type[BaseException], ...] = ()):
    """Every refusal of an import names the file and says that nothing was written; a
    damaged stream and the store's disk (full, out of inodes, read-only) are refusals."""
    try:
        yield
    except (tarfile.TarError, EOFError, *damaged) as exc:
        raise ArchiveError(f"{path}: the archive is damaged or truncated ({exc})", hint=NOTHING_WRITTEN) from None
    except ArchiveError as exc:
        raise ArchiveError(f"{path}: {exc.message}", hint=exc.hint or NOTHING_WRITTEN) from None
    except OSError as exc:
        if exc.errno is None:
            raise
        raise ArchiveError(f"{path}: cannot write the box into {store.root}: {exc.strerror or exc}",
                           hint=f"{NOTHING_WRITTEN}; free some space there and import again") from None


def room(store, margin: int = 256 * 1024**2) -> int:
    """Bytes an import may write into the store: its disk's free space, less a margin
    (for imports whose size is known only as they go)."""
    where = store.root
    while not where.exists():  # a store not made yet: the disk it will be on
        where = where.parent
    return max(0, min(shutil.disk_usage(where).free - margin, MAX_SIZE))


def plain_name(name: str) -> str:
    """A member's name without leading "./" and trailing "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def unpack_members(path: Path, staging: Path, store, progress: Progress | None,
                   wanted: Callable[[str, tarfile.TarInfo], bool]) -> dict[str, Path]:
    """The regular members of the tar archive at `path` (plain, gzip, bzip2 or xz) that
    `wanted` takes (it may refuse the archive), each written under a fixed name in
    staging/.in/, within the store's room and the compression ratio; name -> file. A
    name that comes twice is taken once; folders and links are never written."""
    total = path.stat().st_size
    budget = room(store)
    incoming = staging / ".in"
    incoming.mkdir(mode=0o700)
    found: dict[str, Path] = {}
    with open(path, "rb") as raw:
        writer = _Extractor(incoming, {"size": budget, "files": {}}, None, raw.tell)
        writer.limit = f"the {budget >> 20} MiB the store has room for"
        if progress:
            writer.progress = lambda done, _: progress(min(raw.tell(), total), total)
        with tarfile.open(fileobj=raw, mode="r|*", tarinfo=_Member) as tar:
            for member in tar:
                name = plain_name(member.name)
                if not member.isreg() or name in found or not wanted(name, member):
                    continue
                target = incoming / str(len(found))
                writer.write(tar, member, target)
                found[name] = target
    if progress:
        progress(total, total)
    return found
