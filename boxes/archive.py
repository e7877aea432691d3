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
import stat
import tarfile
from pathlib import Path
from typing import Callable

from boxes.meta import ARTEFACTS, BoxMeta
from boxes.tree import CHUNK, file_sha256, kept_xattrs, tree_digest, walk
from boxes.unpack import DEVICES, ROOTFS, XATTR_KEY, ArchiveError, Progress, _Extractor, _Member, refusals, room

FORMAT = 1
MANIFEST = "vbox-box.json"
FILES = tuple(v for k, v in ARTEFACTS.items() if k != "rootfs")
MAX_MANIFEST = 1024 * 1024



def _is_device(path: Path) -> bool:
    """A device node (a box built by vbox since builder 9 has links and none in /dev)."""
    try:
        return stat.S_ISCHR(os.lstat(path).st_mode)
    except OSError:
        return False


def export(box, target: Path, progress: Progress | None = None) -> str:
    """Write the box to `target` (through a .part file, renamed when complete); its sha256."""
    import zstandard

    rootfs = box.artefact("rootfs")
    files = [name for name in FILES if (box.path / name).is_file()]
    devices = sorted(name for name in DEVICES if _is_device(rootfs / "dev" / name)) if rootfs.is_dir() else []
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
            free = room(store, margin=0)  # its manifest says its size: the disk's free space will do
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
