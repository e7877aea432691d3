"""OCI images as the root tree of LXC machines: `env box import IMAGE.tar --name NAME`.

Takes an OCI image layout in a tar archive (`skopeo copy ... oci-archive:`, `docker save`
of Docker 25 and later) or a docker-archive (`docker save` before 25: manifest.json naming
the config and the layer files). The image's layers (tar, gzip or zstd) are applied in
order into one root tree: a `.wh.NAME` entry removes NAME from the layers below, a
`.wh..wh..opq` entry empties its folder of them. An index of several platforms gives its
linux/amd64 image.

An image runs one program; a machine needs more. vbox does not add anything to the tree:
it needs an init (/sbin/init, systemd) and an sshd in the image, and refuses one without
them, saying what to install. vbox logs in as root unless --user names another user
of the image (with the project's key; the image's own sshd settings must allow it, as
Debian's `PermitRootLogin prohibit-password` does). The machine's address comes from LXC
itself, so the image needs no network settings.

Nothing in the file is trusted: every blob is checked against its sha256 as it is
written, under a fixed name; layers go through the checks of a vbox archive's tree
(boxes/archive.py: no member out of the tree or through a link, bounded sizes and ratio,
device nodes left out, attributes other than file capabilities dropped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path

from boxes.unpack import ROOTFS, ArchiveError, Progress, _Member, plain_name, room, unpack_members
from boxes.meta import ARTEFACTS, BoxMeta
from boxes.tree import file_sha256, tree_digest
from boxes.vagrant import _TreeExtractor, box_digest, check_tree

DEFAULT_USER = "root"
MAX_JSON = 4 * 1024 * 1024
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_BLOB = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"


def is_image(path: Path) -> bool:
    """Whether the file is a tar archive with an OCI layout (index.json) or a docker-archive
    (manifest.json), and no Vagrant metadata.json."""
    try:
        with tarfile.open(path, mode="r|*", tarinfo=_Member) as tar:
            names = set()
            for count, member in enumerate(tar):
                names.add(plain_name(member.name))
                if count > 64 or "metadata.json" in names:
                    break
    except (tarfile.TarError, OSError, EOFError, ArchiveError):
        return False
    return "metadata.json" not in names and ("index.json" in names or "oci-layout" in names
                                              or "manifest.json" in names)


class _Layers(_TreeExtractor):
    """Layers applied in order into staging/rootfs, with whiteouts."""

    def __init__(self, *args):
        super().__init__(*args)
        self.under = False  # a layer's names are the tree's (no ./rootfs/ folder)

    def begin_layer(self) -> None:
        self.names = set()  # a name may come again in a later layer: it replaces the lower one

    def _remove(self, name: str) -> None:
        """A path of the tree and all under it, as the lower layers made it."""
        path = self.staging / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        prefix = name + "/"
        self.dirs = {d for d in self.dirs if d != name and not d.startswith(prefix)}
        self.files = {f for f in self.files if f != name and not f.startswith(prefix)}
        self.dir_attrs = [(d, m) for d, m in self.dir_attrs if d != name and not d.startswith(prefix)]

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.ischr() or member.isblk() or member.isfifo():
            return  # LXC makes the container's /dev
        relative = self._relative(member.name)
        if relative is None:
            return
        parent, _, base = relative.rpartition("/")
        name = f"{ROOTFS}/{relative}"
        folder = f"{ROOTFS}/{parent}" if parent else ROOTFS
        if base.startswith(WHITEOUT):
            if folder not in self.dirs:
                raise ArchiveError(f"a whiteout outside a folder of the image: {member.name!r}")
            if base == OPAQUE:  # the lower layers' entries; this layer's stay
                for child in list((self.staging / folder).iterdir()):
                    if f"{folder}/{child.name}" not in self.names:
                        self._remove(f"{folder}/{child.name}")
            else:
                hidden = base[len(WHITEOUT):]
                if hidden in ("", ".", "..") or "/" in hidden:
                    raise ArchiveError(f"a whiteout of no name in the image: {member.name!r}")
                self._remove(f"{folder}/{hidden}")
            return
        existing = self.staging / name
        if os.path.lexists(existing) and name not in self.names:  # from a lower layer: replaced
            if member.isdir() and existing.is_dir() and not existing.is_symlink():
                self.dir_attrs.append((name, member))
                self.names.add(name)
                return
            self._remove(name)
        super().add(tar, member)


def _layer_stream(path: Path):
    """The layer file as a tar stream, whatever its compression (by its first bytes)."""
    raw = open(path, "rb")
    head = raw.read(4)
    raw.seek(0)
    try:
        if head[:2] == b"\x1f\x8b":
            import gzip

            stream = gzip.GzipFile(fileobj=raw)
        elif head == b"\x28\xb5\x2f\xfd":
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        else:
            stream = raw
        return raw, tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member)
    except (OSError, tarfile.TarError) as exc:
        raw.close()
        raise ArchiveError(f"a layer is not a tar archive ({exc})") from None


def import_image(path: Path, store, name: str | None, version: str = "0", user: str = DEFAULT_USER,
                 progress: Progress | None = None, on_phase=None, force: bool = False):
    """Check an image archive, apply its layers into a root tree and add it to the store."""
    from boxes.build import _tree_size
    from boxes.vagrant import import_into

    def make(staging: Path) -> BoxMeta:
        blobs = _unpack(path, staging, store, progress)
        layers = _layers(blobs)
        if on_phase:
            on_phase("applying layers")
        read = [0, None]  # compressed bytes of the layers done; the one being read
        tree = _Layers(staging, room(store), lambda: read[0] + read[1].tell())
        for layer in layers:
            raw, tar = _layer_stream(layer)
            read[1] = raw
            tree.begin_layer()
            try:
                with tar:
                    while (member := tar.next()) is not None:
                        tree.add(tar, member)
            finally:
                raw.close()
            read[0] += layer.stat().st_size
        tree.finish([])
        shutil.rmtree(staging / ".in")
        rootfs = staging / ROOTFS
        check_tree(rootfs, user, image=True)
        digest = box_digest(f"rootfs {tree_digest(rootfs)}\n")
        return BoxMeta(digest=digest, name=name, version=version, user=user,
                       description=f"an OCI image ({len(layers)} layers), imported",
                       artefacts={"rootfs": ARTEFACTS["rootfs"]}, size=_tree_size(staging), source={"file": path.name})

    return import_into(store, path, name, version, user, force, "an image archive", make)


def _unpack(path: Path, staging: Path, store, progress: Progress | None) -> dict[str, Path]:
    """The archive's JSON files and blobs, written under fixed names in staging/.in/, each
    blob checked against the sha256 in its name. name in the archive -> file."""
    def used(name: str, member: tarfile.TarInfo) -> bool:
        if name.endswith(".json") and member.size > MAX_JSON:
            raise ArchiveError(f"its {name} is {member.size} bytes")
        return True

    found = unpack_members(path, staging, store, progress, used)
    for name, file in found.items():
        blob = _BLOB.match(name)
        if blob and file_sha256(file) != blob[1]:
            raise ArchiveError(f"{name} does not have the sha256 its name gives (damaged or altered)")
    return found


def _json(files: dict[str, Path], name: str):
    if name not in files:
        raise ArchiveError(f"the image has no {name}")
    try:
        return json.loads(files[name].read_bytes())
    except ValueError:
        raise ArchiveError(f"its {name} is not JSON") from None


def _blob(files: dict[str, Path], digest) -> str:
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise ArchiveError(f"a digest vbox does not take: {digest!r} (sha256 only)")
    name = f"blobs/sha256/{match[1]}"
    if name not in files:
        raise ArchiveError(f"the image names {digest}, which it does not have")
    return name


def _layers(files: dict[str, Path]) -> list[Path]:
    """The image's layer files, lowest first."""
    if "index.json" in files:
        index = _json(files, "index.json")
        for _ in range(4):  # an index may name an index (one per platform)
            manifests = index.get("manifests") if isinstance(index, dict) else None
            if not isinstance(manifests, list) or not manifests:
                raise ArchiveError("its index.json names no image")
            chosen = [m for m in manifests if isinstance(m, dict) and (m.get("platform") or {}).get("architecture")
                      in (None, "amd64") and (m.get("platform") or {}).get("os") in (None, "linux")]
            if not chosen:
                raise ArchiveError("it has no linux/amd64 image")
            entry = chosen[0]
            blob = _json(files, _blob(files, entry.get("digest")))
            if entry.get("mediaType") in INDEX_TYPES or blob.get("mediaType") in INDEX_TYPES:
                index = blob
                continue
            layers = blob.get("layers") if isinstance(blob, dict) else None
            if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
                raise ArchiveError("its image manifest has no valid layers")
            return [files[_blob(files, layer.get("digest"))] for layer in layers]
        raise ArchiveError("its index.json nests indexes too deep")
    manifest = _json(files, "manifest.json")  # a docker-archive
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise ArchiveError("its manifest.json names no image")
    names = manifest[0].get("Layers")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArchiveError("its manifest.json has no valid Layers")
    missing = [n for n in names if plain_name(n) not in files]
    if missing:
        raise ArchiveError(f"it has no layer {missing[0]!r}")
    return [files[plain_name(n)] for n in names]
