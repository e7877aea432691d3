"""A box as one file, to carry to another machine: `env box export` and `env box import`.

The archive is a tar stream (PAX) compressed with zstd. Its first member is a manifest,
`vbox-box.json`: the box's metadata, the sha256 of each artefact file, a digest of the
root tree, its total size, and which standard device nodes the tree had. Then the
artefact files (disk.qcow2, vmlinuz, initrd.img, xen), then the root tree under
`rootfs/`, in sorted order: directories, regular files, symbolic links and hard links;
file capabilities, ACLs and user attributes as PAX records. Device nodes are not in it
(a box's /dev holds only the standard ones, which the import makes itself).

An import trusts nothing in the file until it is checked. It reads the stream once,
into a staging folder of the store: a member whose name is absolute, has "..", is not
one of the names above, comes twice or goes through a link; a device, FIFO or a hard
link to anything but a file it already wrote; any attribute outside the list above;
more bytes or members than the manifest declares (or than the disk has room for): each
of these stops the import, and the staging folder goes. Then every artefact's sha256,
the box's digest and the root tree's digest are computed again and compared. Only a box
that passes all of it is moved into the store (one rename): identical to the exporter's.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from boxes.meta import ARTEFACTS, BoxMeta
from boxes.tree import CHUNK, XATTRS, file_sha256, kept_xattrs, tree_digest, walk
from vbox_cli.errors import VboxError

FORMAT = 1
MANIFEST = "vbox-box.json"
ROOTFS = ARTEFACTS["rootfs"]
FILES = tuple(v for k, v in ARTEFACTS.items() if k != "rootfs")
XATTR_KEY = "VBOX.xattr."  # PAX record: base64 of the value
DEVICES = {  # the only device nodes a box's /dev may have: name -> (kind, major, minor, mode)
    "null": ("c", 1, 3, 0o666), "zero": ("c", 1, 5, 0o666), "full": ("c", 1, 7, 0o666),
    "random": ("c", 1, 8, 0o666), "urandom": ("c", 1, 9, 0o666), "tty": ("c", 5, 0, 0o666),
    "console": ("c", 5, 1, 0o666), "ptmx": ("c", 5, 2, 0o666),
}
MAX_MANIFEST = 1024 * 1024
MAX_HEADER = 1024 * 1024  # a PAX or GNU long-name header
MAX_MEMBERS = 2_000_000
MAX_SIZE = 64 * 1024**3  # more than any box; a manifest may declare less, never more
MAX_RATIO = 200  # bytes out per compressed byte in: a box gives about 3, a bomb of zeros thousands

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class ArchiveError(VboxError):
    """The archive is not a box vbox may import; nothing was written."""


# -- export --------------------------------------------------------------------------
def export(box, target: Path, progress: Progress | None = None) -> str:
    """Write the box to `target` (through a .part file, renamed when complete); its sha256."""
    import zstandard

    rootfs = box.artefact("rootfs")
    files = [name for name in FILES if (box.path / name).is_file()]
    devices = sorted(name for name in DEVICES if os.path.lexists(rootfs / "dev" / name)) if rootfs.is_dir() else []
    total = sum((box.path / name).stat().st_size for name in files)
    if rootfs.is_dir():
        total += sum(info.st_size for _, info in walk(rootfs) if stat.S_ISREG(info.st_mode))
    manifest = {
        "format": FORMAT, "name": box.name, "version": box.version, "meta": box.meta.to_dict(),
        "files": {name: file_sha256(box.path / name) for name in files},
        "tree": tree_digest(rootfs) if rootfs.is_dir() else None, "devices": devices, "size": total,
    }
    partial = target.with_name(target.name + ".part")
    done = 0
    sha = hashlib.sha256()

    class Hashing(io.RawIOBase):  # the compressed bytes, hashed on their way to the file
        def __init__(self, out):
            self.out = out

        def writable(self):
            return True

        def write(self, data):
            sha.update(data)
            return self.out.write(data)

    try:
        with open(partial, "wb") as raw:
            compressor = zstandard.ZstdCompressor(level=3, threads=-1)
            with compressor.stream_writer(Hashing(raw), closefd=False) as compressed, \
                    tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                data = json.dumps(manifest, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(data), 0o644, 0  # the same archive from the same box
                tar.addfile(info, io.BytesIO(data))
                for name in files:
                    with open(box.path / name, "rb") as f:
                        tar.addfile(_info(tar, box.path / name, name), f)
                    done += (box.path / name).stat().st_size
                    if progress:
                        progress(done, total)
                if rootfs.is_dir():
                    tar.addfile(_info(tar, rootfs, ROOTFS))
                    for relative, st in walk(rootfs):
                        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                            continue  # device nodes: made by the import from DEVICES
                        path = rootfs / relative
                        info = _info(tar, path, f"{ROOTFS}/{relative}")
                        if info.isreg():
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
                            done += st.st_size
                            if progress and done % (64 * CHUNK) < st.st_size:
                                progress(done, total)
                        else:
                            tar.addfile(info)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if progress:
        progress(total, total)
    return sha.hexdigest()


def _info(tar: tarfile.TarFile, path: Path, name: str) -> tarfile.TarInfo:
    info = tar.gettarinfo(str(path), arcname=name)  # a second name of a file: a hard link member
    info.uname = info.gname = ""
    xattrs = kept_xattrs(str(path))
    if xattrs:
        info.pax_headers = {XATTR_KEY + k: base64.b64encode(v).decode() for k, v in xattrs.items()}
    return info


# -- import --------------------------------------------------------------------------
def read_manifest(tar: tarfile.TarFile) -> dict:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST:
        raise ArchiveError(f"not a vbox box archive: it does not begin with {MANIFEST}")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except (ValueError, tarfile.TarError, OSError):
        raise ArchiveError(f"its {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"a box archive of another format ({manifest.get('format') if isinstance(manifest, dict) else '?'}); "
                           f"this vbox reads format {FORMAT}")
    for key, kind in (("name", str), ("version", str), ("meta", dict), ("files", dict), ("size", int),
                      ("devices", list)):
        if not isinstance(manifest.get(key), kind):
            raise ArchiveError(f"its {MANIFEST} has no valid {key!r}")
    if set(manifest["files"]) - set(FILES) or not set(manifest["devices"]) <= set(DEVICES):
        raise ArchiveError(f"its {MANIFEST} names files vbox does not know")
    return manifest


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


def is_box_archive(path: Path) -> bool:
    """Whether the file is zstd-compressed, as vbox's archives are (its manifest is checked
    when it is imported)."""
    with open(path, "rb") as f:
        return f.read(4) == b"\x28\xb5\x2f\xfd"


def open_archive(path: Path):
    """A streaming tar reader over the (zstd-compressed) file."""
    import zstandard

    raw = open(path, "rb")
    try:
        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return raw, tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member)
    except (zstandard.ZstdError, tarfile.TarError) as exc:
        raw.close()
        raise ArchiveError(f"not a zstd-compressed tar archive ({exc})") from None


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


def room(store) -> int:
    """Bytes an import may write into the store: its disk's free space, less a margin."""
    where = store.root
    while not where.exists():  # a store not made yet: the disk it will be on
        where = where.parent
    return min(shutil.disk_usage(where).free - 256 * 1024**2, MAX_SIZE)


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


def import_archive(path: Path, store, name: str | None = None, progress: Progress | None = None,
                   on_phase: Callable[[str], None] | None = None, force: bool = False, source: dict | None = None):
    """Check and unpack a box archive into the store; the Box. Nothing is written to the
    store unless every check passes."""
    import zstandard

    from boxes.build import _digest
    from boxes.store import discard
    from vbox_cli.envfile.types import _box_name

    with refusals(path, store):
        raw, tar = open_archive(path)
    staging = None
    try:
        with refusals(path, store, damaged=(zstandard.ZstdError,)):
            manifest = read_manifest(tar)
            box_name = name or manifest["name"]
            try:
                _box_name(box_name)
            except ValueError as exc:
                raise ArchiveError(f"the box name {box_name!r}: {exc}") from None
            version = manifest["version"]
            if not version or "/" in version or version.startswith("."):
                raise ArchiveError(f"its version {version!r} is not a folder name")
            free = room(store)
            if manifest["size"] > free:
                raise ArchiveError(f"it needs {manifest['size'] >> 20} MiB and the store has room for {free >> 20} MiB")
            meta = BoxMeta.from_dict({**manifest["meta"], "name": box_name, **({"source": source} if source else {})})
            existing = store.find(box_name, version)
            if existing is not None and existing.digest == meta.digest and not force:
                return existing  # already here, identical
            if existing is not None and not force:
                raise ArchiveError(f"the store has another {box_name} {version} ({existing.digest[:19]}, this one "
                                   f"is {meta.digest[:19]})", hint="--force replaces it, or --name imports it "
                                                                     "under another name")
            staging = store.staging(box_name)
            extractor = _Extractor(staging, manifest, progress, raw.tell)
            while (member := tar.next()) is not None:  # iterating the TarFile would begin again
                extractor.add(tar, member)
            missing = set(manifest["files"]) - extractor.files
            if missing:
                raise ArchiveError(f"the archive ends before {', '.join(sorted(missing))} (truncated)")
            extractor.finish(manifest["devices"])
            if on_phase:
                on_phase("verifying")
            for file_name, expected in manifest["files"].items():
                if file_sha256(staging / file_name) != expected:
                    raise ArchiveError(f"{file_name} does not have the sha256 its manifest gives (damaged in "
                                       "transit?)")
            has_disk = all((staging / ARTEFACTS[k]).is_file() for k in ("disk", "kernel", "initrd"))
            if has_disk and meta.digest.startswith("sha256:") and f"sha256:{_digest(staging)}" != meta.digest:
                raise ArchiveError(f"the box's digest is not {meta.digest} (a box altered after it was built)")
            if manifest.get("tree") and tree_digest(staging / ROOTFS) != manifest["tree"]:
                raise ArchiveError("the root tree is not the one exported (its digest differs)")
            box = store.install(staging, box_name, version, meta)
            staging = None
            return box
    finally:
        tar.close()
        raw.close()
        if staging is not None:
            discard(staging)
